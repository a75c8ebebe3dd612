//! The state store through its public API: claims are fenced by their epoch, two stores
//! on one SQLite file never claim the same item, and pruning keeps what it should.

use crate::common::with_watchdog;
use crate::support::{block_on, WATCHDOG};
use ferry_server::state::{Claimed, NewBatch, OpenCaps, StateStore};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const CAPS: OpenCaps = OpenCaps {
    count: 1_000,
    bytes: 1 << 30,
};

const SPEC: &str = r#"{"worker_type":"echo","operation":"echo"}"#;

/// Creates and executes batch `id` of `n` items.
async fn running_batch(store: &StateStore, id: &str, n: usize, parallelism: usize) {
    let items: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    store
        .create_batch(
            NewBatch {
                id,
                spec: SPEC.to_owned(),
                parallelism,
                items: &items,
                bytes: 16 * n,
            },
            CAPS,
        )
        .await
        .unwrap();
    assert!(store.execute_batch(id).await.unwrap());
}

async fn finish(store: &StateStore, c: &Claimed) -> bool {
    store
        .finish_item(
            &c.batch_id,
            c.index,
            c.epoch,
            "completed",
            Some(&c.input),
            None,
            &[],
        )
        .await
        .unwrap()
}

fn sqlite_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("ferry-store-")
        .tempdir()
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    (dir, url)
}

#[test]
fn finish_with_an_old_epoch_stores_nothing() {
    with_watchdog(WATCHDOG, || {
        block_on(async {
            let store = StateStore::open_url("memory", "h1", 60_000).await.unwrap();
            running_batch(&store, "b1", 3, 2).await;
            let claimed = store.claim_items(|_, wanted| wanted).await.unwrap();
            assert_eq!(claimed.len(), 2, "parallelism 2: {claimed:?}");
            assert!(claimed.iter().all(|c| c.epoch == 1 && !c.was_running));
            // Full: nothing more until one ends.
            assert!(store
                .claim_items(|_, wanted| wanted)
                .await
                .unwrap()
                .is_empty());
            let first = &claimed[0];
            let stale = Claimed {
                epoch: first.epoch - 1,
                ..first.clone()
            };
            assert!(!finish(&store, &stale).await, "an old epoch is refused");
            assert!(finish(&store, first).await);
            assert!(!finish(&store, first).await, "a second result is refused");
            let b = store.batch("b1").await.unwrap().unwrap();
            let item = &b.items[first.index];
            assert_eq!((item.status.as_str(), item.completions), ("completed", 1));
            assert_eq!(item.finished_by.as_deref(), Some("h1"));
            assert_eq!(item.result.as_deref(), Some(first.input.as_str()));
        });
    });
}

#[test]
fn a_lease_run_out_moves_the_item_and_fences_the_old_claim() {
    with_watchdog(WATCHDOG, || {
        block_on(async {
            let (_dir, url) = sqlite_file();
            // h1's leases last 1 ms and it never renews them: h2 takes its item over.
            let h1 = StateStore::open_url(&url, "h1", 1).await.unwrap();
            let h2 = StateStore::open_url(&url, "h2", 60_000).await.unwrap();
            running_batch(&h1, "b1", 1, 1).await;
            let old = h1.claim_items(|_, wanted| wanted).await.unwrap();
            assert_eq!(old.len(), 1);
            let new = loop {
                // An event: the lease has run out once h2 can claim the item.
                let c = h2.claim_items(|_, wanted| wanted).await.unwrap();
                if !c.is_empty() {
                    break c;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            assert_eq!(new.len(), 1);
            assert!(new[0].was_running, "{new:?}");
            assert_eq!(new[0].epoch, old[0].epoch + 1);
            assert!(
                !finish(&h1, &old[0]).await,
                "h1's claim is no longer current"
            );
            assert!(finish(&h2, &new[0]).await);
            let b = h1.batch("b1").await.unwrap().unwrap();
            assert_eq!(b.status, "completed");
            assert_eq!(b.items[0].completions, 1);
            assert_eq!(b.items[0].finished_by.as_deref(), Some("h2"));
        });
    });
}

/// Claims until a round claims nothing; returns the store, its claims, and how many
/// rounds failed with SQLite's `database is locked` (retried when `retry_locked`, else a
/// panic).
fn claim_all(
    store: StateStore,
    retry_locked: bool,
) -> tokio::task::JoinHandle<(StateStore, Vec<Claimed>, usize)> {
    tokio::spawn(async move {
        let mut mine = Vec::new();
        let mut locked = 0;
        loop {
            match store.claim_items(|_, wanted| wanted).await {
                Ok(c) if c.is_empty() => return (store, mine, locked),
                Ok(c) => mine.extend(c),
                Err(e) if retry_locked && e.to_string().contains("database is locked") => {
                    locked += 1;
                }
                Err(e) => panic!("claim_items on {}: {e}", store.host()),
            }
        }
    })
}

/// Two stores on one SQLite file claiming at once: the second waits for the first
/// (`BEGIN IMMEDIATE` and `busy_timeout`), never failing with `database is locked`.
#[test]
fn two_stores_on_one_sqlite_file_claim_without_lock_errors() {
    with_watchdog(WATCHDOG, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_dir, url) = sqlite_file();
            let h1 = StateStore::open_url(&url, "h1", 60_000).await.unwrap();
            let h2 = StateStore::open_url(&url, "h2", 60_000).await.unwrap();
            for round in 0..20 {
                let id = format!("b{round}");
                running_batch(&h1, &id, 8, 8).await;
                let (a, b) =
                    tokio::join!(claim_all(h1.clone(), false), claim_all(h2.clone(), false));
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!(a.1.len() + b.1.len(), 8);
            }
        });
    });
}

#[test]
fn two_stores_on_one_sqlite_file_never_claim_the_same_item() {
    with_watchdog(WATCHDOG, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_dir, url) = sqlite_file();
            let h1 = StateStore::open_url(&url, "h1", 60_000).await.unwrap();
            let h2 = StateStore::open_url(&url, "h2", 60_000).await.unwrap();
            const N: usize = 60;
            running_batch(&h1, "wide", N, N).await;
            running_batch(&h1, "narrow", N, 3).await;
            let (a, b) = tokio::join!(claim_all(h1, true), claim_all(h2, true));
            let ((h1, mine1, locked1), (h2, mine2, locked2)) = (a.unwrap(), b.unwrap());
            if locked1 + locked2 > 0 {
                eprintln!(
                    "claims refused with `database is locked` (retried): {} (see \
                     two_stores_on_one_sqlite_file_claim_without_lock_errors)",
                    locked1 + locked2
                );
            }
            let mut seen = BTreeSet::new();
            for c in mine1.iter().chain(&mine2) {
                assert!(
                    seen.insert((c.batch_id.clone(), c.index)),
                    "claimed twice: {c:?}"
                );
            }
            let wide = seen.iter().filter(|(b, _)| b == "wide").count();
            let narrow = seen.iter().filter(|(b, _)| b == "narrow").count();
            assert_eq!(wide, N, "every item of the wide batch claimed once");
            assert_eq!(narrow, 3, "the hosts together keep to parallelism 3");
            for c in &mine1 {
                assert!(finish(&h1, c).await);
                assert!(!finish(&h2, c).await, "not h2's claim");
            }
            for c in &mine2 {
                assert!(finish(&h2, c).await);
            }
            let b = h2.batch("wide").await.unwrap().unwrap();
            assert_eq!(b.status, "completed");
            assert!(b.items.iter().all(|i| i.completions == 1));
        });
    });
}

#[test]
fn prune_keeps_the_newest_finished_and_every_unfinished_batch() {
    with_watchdog(WATCHDOG, || {
        block_on(async {
            let store = StateStore::open_url("memory", "h1", 60_000).await.unwrap();
            for id in ["done-1", "done-2", "done-3"] {
                running_batch(&store, id, 1, 1).await;
                let c = store.claim_items(|_, wanted| wanted).await.unwrap();
                assert_eq!(c.len(), 1);
                assert!(finish(&store, &c[0]).await);
                assert_eq!(store.batch(id).await.unwrap().unwrap().status, "completed");
            }
            running_batch(&store, "open", 2, 1).await;
            let pending = store.claim_items(|_, wanted| wanted).await.unwrap();
            assert_eq!(pending.len(), 1);
            store
                .create_batch(
                    NewBatch {
                        id: "created",
                        spec: SPEC.to_owned(),
                        parallelism: 1,
                        items: &[json!(0)],
                        bytes: 16,
                    },
                    CAPS,
                )
                .await
                .unwrap();
            let day = Duration::from_secs(24 * 3600);
            store.prune(1, day, day).await.unwrap();
            let left: BTreeSet<String> = store.batch_ids().await.unwrap().into_iter().collect();
            assert_eq!(
                left,
                ["created", "done-3", "open"]
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            );
            // The pruned batch's items went with it; the running one is untouched.
            assert!(store.batch("done-1").await.unwrap().is_none());
            assert!(finish(&store, &pending[0]).await);
        });
    });
}
