//! Two hosts on one PostgreSQL database share a batch, and one of them is killed with
//! SIGKILL mid-batch: the other takes its items over once their leases run out.
//!
//! Needs `FERRY_TEST_POSTGRES_URL` (a database the test may create databases from; each
//! run makes its own `ferry_test_*` database and drops it). Without it the test says it
//! is skipped, except under `CI=true` or `FERRY_REQUIRE_POSTGRES=1` (scripts/test), where
//! it fails: CI never skips it silently.

use crate::common;
use crate::support::{
    block_on, config, count, db_items, start_batch, wait_for, wait_gone, with_hosts, worker_pids,
};
use common::gates::Gates;
use serde_json::json;
use sqlx::Connection;

/// The variable naming the PostgreSQL server.
const URL_VAR: &str = "FERRY_TEST_POSTGRES_URL";

/// The server's URL, or `None` (with a notice) when the test is to be skipped.
fn postgres_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("CI").as_deref() == Ok("true")
                || std::env::var("FERRY_REQUIRE_POSTGRES").as_deref() == Ok("1");
            assert!(
                !required,
                "{URL_VAR} is unset and CI=true or FERRY_REQUIRE_POSTGRES=1: the PostgreSQL \
                 tests must run (scripts/with-postgres starts a server and sets it)"
            );
            eprintln!("SKIPPED: {URL_VAR} is unset; the PostgreSQL state test did not run");
            None
        }
    }
}

/// `url` with its database name replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &base[..authority_end])
}

/// A database of its own for one run, dropped at the end (also when the test fails).
struct TestDatabase {
    admin_url: String,
    name: String,
    /// The new database's URL.
    url: String,
}

impl TestDatabase {
    fn create(admin_url: &str) -> TestDatabase {
        let suffix: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ u64::from(std::process::id()) << 32;
        let name = format!("ferry_test_{suffix:x}");
        Self::execute(admin_url, &format!("CREATE DATABASE {name}"));
        TestDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    fn execute(url: &str, sql: &str) {
        block_on(async {
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(url)
                .await
                .unwrap_or_else(|e| panic!("connect to {URL_VAR}: {e}"));
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        });
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = self.admin_url.clone();
        // Not a panic inside a panic: a failed drop is reported, and the test's own
        // failure (if any) is the one shown.
        if let Err(e) = std::panic::catch_unwind(|| TestDatabase::execute(&admin, &sql)) {
            eprintln!("could not drop {}: {e:?}", self.name);
        }
    }
}

fn state(url: &str, host: &str) -> String {
    format!("[state]\nurl = \"{url}\"\nhost_id = \"{host}\"\nlease_ms = 1500\n")
}

const ITEMS: usize = 30;
/// Host B completes these before the kill; the next [`PER_HOST`] wait in B's workers.
const DONE_ON_B: usize = 6;
/// Each host's gated pool runs this many items at once (its workers' places), and takes
/// no more.
const PER_HOST: usize = 4;
/// The batch's parallelism: room for both hosts.
const PARALLELISM: usize = 2 * PER_HOST;

#[test]
fn two_hosts_share_a_batch_on_postgres_and_survive_a_sigkill() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    with_hosts(move |hosts| {
        let db = TestDatabase::create(&admin_url);
        let gates = Gates::new();
        for i in 0..DONE_ON_B {
            gates.release(&format!("b{i}"));
        }
        // B alone first: it takes as many items as its workers have places (PER_HOST), so
        // the held items DONE_ON_B.. are B's, whatever the timing, and half the batch's
        // parallelism is left for A.
        let b = hosts.start(&config(&gates, true, PER_HOST, &state(&db.url, "B")));
        let mut cb = b.client();
        // A session run on B, read later on A.
        gates.release("s1");
        gates.release("s2");
        let s = cb.request(
            "POST",
            "/api/processing/workflows/gated/execute",
            Some(r#"{"one": "s1", "two": "s2"}"#),
        );
        assert_eq!(s.status, 202, "{}", s.body);
        let session_path = format!(
            "/api/processing/sessions/{}",
            s.json()["id"].as_str().unwrap()
        );
        let session = wait_for(&mut cb, &session_path, "the session on B", |v| {
            v["status"] == "completed"
        });
        let labels: Vec<String> = (0..ITEMS).map(|i| format!("b{i}")).collect();
        let (id, path) = start_batch(&mut cb, &labels, PARALLELISM);
        let held: Vec<usize> = (DONE_ON_B..DONE_ON_B + PER_HOST).collect();
        for &i in &held {
            gates.wait_for(&format!("started b{i}"));
        }
        let on_b = wait_for(&mut cb, &path, "B: six completed, four running", |v| {
            v["counts"]["completed"] == DONE_ON_B && v["counts"]["running"] == PER_HOST
        });
        let b_workers = worker_pids(&gates);

        // A joins: it takes the batch's other free places (items held at their gates too),
        // so both hosts run items of one batch at once; it answers for the batch B
        // created; the database tells the hosts apart.
        let a = hosts.start(&config(&gates, true, PER_HOST, &state(&db.url, "A")));
        let mut ca = a.client();
        let on_a: Vec<usize> = (DONE_ON_B + PER_HOST..DONE_ON_B + 2 * PER_HOST).collect();
        for &i in &on_a {
            gates.wait_for(&format!("started b{i}"));
        }
        let r = ca.request("GET", &session_path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["result"], session["result"], "{}", r.body);
        assert_eq!(r.json()["status"], "completed", "{}", r.body);
        let r = ca.request("GET", &path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["counts"]["completed"], DONE_ON_B, "{}", r.body);
        let rows = db_items(&db.url, &id);
        for &i in &held {
            assert_eq!(rows[i].status, "running", "{rows:?}");
            assert_eq!(rows[i].owner.as_deref(), Some("B"), "{rows:?}");
        }
        for &i in &on_a {
            assert_eq!(rows[i].status, "running", "{rows:?}");
            assert_eq!(rows[i].owner.as_deref(), Some("A"), "{rows:?}");
        }
        // Nobody took more than the batch's parallelism.
        assert_eq!(
            rows.iter().filter(|r| r.status == "running").count(),
            PARALLELISM,
            "{rows:?}"
        );
        for row in &rows[..DONE_ON_B] {
            assert_eq!(row.finished_by.as_deref(), Some("B"), "{rows:?}");
        }
        assert_eq!(on_b["status"], "running");

        drop(cb);
        b.kill9();
        wait_gone(&b_workers);
        gates.release_all();
        // A takes B's items over once their leases run out, and runs the rest.
        let done = wait_for(&mut ca, &path, "batch completion on A", |v| {
            v["status"] == "completed"
        });
        assert_eq!(done["counts"]["completed"], ITEMS, "{done}");
        for (i, item) in done["items"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                item["result"],
                json!({ "label": format!("b{i}") }),
                "{done}"
            );
        }
        let rows = db_items(&db.url, &id);
        assert_eq!(rows.len(), ITEMS);
        for row in &rows {
            assert_eq!(
                (row.status.as_str(), row.completions),
                ("completed", 1),
                "{rows:?}"
            );
            let expected = if (row.index as usize) < DONE_ON_B {
                "B"
            } else {
                "A"
            };
            assert_eq!(row.finished_by.as_deref(), Some(expected), "{rows:?}");
        }
        // B's held items ran again on A (idempotent); every item finished once.
        for &i in &held {
            assert_eq!(
                count(&gates, "started", &format!("b{i}")),
                2,
                "{:?}",
                gates.log()
            );
        }
        for i in 0..ITEMS {
            assert_eq!(
                count(&gates, "finished", &format!("b{i}")),
                1,
                "{:?}",
                gates.log()
            );
        }
        drop(ca);
        a.stop();
        drop(db);
    });
}

#[test]
fn with_database_replaces_only_the_name() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/ferry?host=/tmp/x", "t1"),
        "postgres://u:p@h:5432/t1?host=/tmp/x"
    );
    assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
    assert_eq!(
        with_database("postgresql://h/db?sslmode=disable", "t1"),
        "postgresql://h/t1?sslmode=disable"
    );
}
