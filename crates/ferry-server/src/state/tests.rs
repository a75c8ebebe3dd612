//! The store on an in-memory SQLite database and on a SQLite file shared by two stores
//! (the PostgreSQL backend is tested end to end in `tests/state`).

use super::*;
use serde_json::json;

const CAPS: OpenCaps = OpenCaps {
    count: 10,
    bytes: 1 << 20,
};

async fn batch_of(store: &StateStore, id: &str, n: usize, parallelism: usize) {
    let items: Vec<serde_json::Value> = (0..n).map(|i| json!({ "i": i })).collect();
    store
        .create_batch(
            NewBatch {
                id,
                spec: r#"{"worker_type":"w","operation":"op"}"#.into(),
                parallelism,
                items: &items,
                bytes: 10,
            },
            CAPS,
        )
        .await
        .unwrap();
    assert!(store.execute_batch(id).await.unwrap());
}

#[tokio::test]
async fn claims_keep_to_parallelism_and_a_stale_claim_cannot_store_a_result() {
    let store = StateStore::open_url("memory", "h1", 60_000).await.unwrap();
    batch_of(&store, "b-1", 3, 2).await;
    let first = store.claim_items(|_, wanted| wanted).await.unwrap();
    assert_eq!(first.len(), 2, "parallelism 2");
    assert!(
        store
            .claim_items(|_, wanted| wanted)
            .await
            .unwrap()
            .is_empty(),
        "no place free"
    );
    let a = &first[0];
    // A finish under another claim (an older epoch) is refused and changes nothing.
    assert!(!store
        .finish_item(
            &a.batch_id,
            a.index,
            a.epoch + 1,
            "completed",
            Some("1"),
            None,
            &[]
        )
        .await
        .unwrap());
    assert!(store
        .finish_item(
            &a.batch_id,
            a.index,
            a.epoch,
            "completed",
            Some("1"),
            None,
            &[b"png".to_vec()]
        )
        .await
        .unwrap());
    // Twice is refused: the item is no longer running under that claim.
    assert!(!store
        .finish_item(
            &a.batch_id,
            a.index,
            a.epoch,
            "completed",
            Some("1"),
            None,
            &[]
        )
        .await
        .unwrap());
    let next = store.claim_items(|_, wanted| wanted).await.unwrap();
    assert_eq!(next.len(), 1);
    for c in [&first[1], &next[0]] {
        store
            .finish_item(
                &c.batch_id,
                c.index,
                c.epoch,
                "failed",
                None,
                Some("{}"),
                &[],
            )
            .await
            .unwrap();
    }
    let b = store.batch("b-1").await.unwrap().unwrap();
    assert_eq!(b.status, "completed");
    assert_eq!(b.items[a.index].completions, 1);
    assert_eq!(b.items[a.index].attachments, vec![b"png".to_vec()]);
    assert_eq!(b.items[a.index].finished_by.as_deref(), Some("h1"));
}

#[tokio::test]
async fn a_host_that_stops_renewing_loses_its_items_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    // h1's lease is 100 ms and it never renews; h2 claims once it has run out.
    let h1 = StateStore::open_url(&url, "h1", 100).await.unwrap();
    let h2 = StateStore::open_url(&url, "h2", 60_000).await.unwrap();
    batch_of(&h1, "b-1", 2, 2).await;
    let lost = h1.claim_items(|_, wanted| wanted).await.unwrap();
    assert_eq!(lost.len(), 2);
    let taken = loop {
        let t = h2.claim_items(|_, wanted| wanted).await.unwrap();
        if !t.is_empty() {
            break t;
        }
        tokio::task::yield_now().await;
    };
    assert!(taken.iter().all(|c| c.was_running), "{taken:?}");
    // h1 comes back: its results are refused, h2's are stored.
    for c in &lost {
        assert!(!h1
            .finish_item(
                &c.batch_id,
                c.index,
                c.epoch,
                "completed",
                Some("0"),
                None,
                &[]
            )
            .await
            .unwrap());
    }
    let mut all = taken;
    while all.len() < 2 {
        all.extend(h2.claim_items(|_, wanted| wanted).await.unwrap());
        tokio::task::yield_now().await;
    }
    for c in &all {
        assert!(h2
            .finish_item(
                &c.batch_id,
                c.index,
                c.epoch,
                "completed",
                Some("2"),
                None,
                &[]
            )
            .await
            .unwrap());
    }
    let b = h2.batch("b-1").await.unwrap().unwrap();
    assert!(b
        .items
        .iter()
        .all(|i| i.completions == 1 && i.finished_by.as_deref() == Some("h2")));
}

#[tokio::test]
async fn a_restarted_host_takes_its_own_running_items_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let before = StateStore::open_url(&url, "h1", 3_600_000).await.unwrap();
    batch_of(&before, "b-1", 1, 1).await;
    assert_eq!(
        before.claim_items(|_, wanted| wanted).await.unwrap().len(),
        1
    );
    drop(before);
    // Same host id, an hour-long lease: taken back without waiting for it.
    let after = StateStore::open_url(&url, "h1", 3_600_000).await.unwrap();
    let again = after.claim_items(|_, wanted| wanted).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].was_running);
    assert_eq!(again[0].epoch, 2);
}

#[tokio::test]
async fn idempotency_keys_run_once_and_replay() {
    let store = StateStore::open_url("memory", "h1", 1000).await.unwrap();
    assert_eq!(
        store.idempotency_begin("k", "f").await.unwrap(),
        IdempotencyBegin::Run
    );
    assert_eq!(
        store.idempotency_begin("k", "f").await.unwrap(),
        IdempotencyBegin::InProgress
    );
    assert_eq!(
        store.idempotency_begin("k", "g").await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    let answer = StoredAnswer {
        status: 201,
        content_type: "application/json".into(),
        body: b"{}".to_vec(),
    };
    store.idempotency_finish("k", &answer).await.unwrap();
    assert_eq!(
        store.idempotency_begin("k", "f").await.unwrap(),
        IdempotencyBegin::Done(answer)
    );
    // A freed key runs again.
    assert_eq!(
        store.idempotency_begin("j", "f").await.unwrap(),
        IdempotencyBegin::Run
    );
    store.idempotency_abort("j").await.unwrap();
    assert_eq!(
        store.idempotency_begin("j", "f").await.unwrap(),
        IdempotencyBegin::Run
    );
}

#[tokio::test]
async fn open_caps_and_pruning() {
    let store = StateStore::open_url("memory", "h1", 1000).await.unwrap();
    let one = OpenCaps {
        count: 1,
        bytes: 100,
    };
    let items = [json!(1)];
    let new = |id| NewBatch {
        id,
        spec: "{}".into(),
        parallelism: 1,
        items: &items,
        bytes: 10,
    };
    store.create_batch(new("b-1"), one).await.unwrap();
    let err = store.create_batch(new("b-2"), one).await.unwrap_err();
    assert!(matches!(err, StateError::LimitReached(_)), "{err}");
    assert!(store.cancel_batch("b-1", None).await.unwrap());
    store.create_batch(new("b-2"), one).await.unwrap();
    store.cancel_batch("b-2", None).await.unwrap();
    // Keep one finished: the older goes.
    store
        .prune(1, Duration::from_secs(3600), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(store.batch("b-1").await.unwrap().is_none());
    assert!(store.batch("b-2").await.unwrap().is_some());
    // Past the age: all go.
    store
        .prune(10, Duration::ZERO, Duration::ZERO)
        .await
        .unwrap();
    assert!(store.batch_ids().await.unwrap().is_empty());
}

#[test]
fn passwords_are_kept_out_of_messages() {
    assert_eq!(
        redact("postgres://ferry:secret@db:5432/ferry"),
        "postgres://ferry:***@db:5432/ferry"
    );
    assert_eq!(redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
}
