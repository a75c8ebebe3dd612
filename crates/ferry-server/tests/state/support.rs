//! What the state tests share: configurations with the gated worker, waiting on a
//! batch's or session's view, the gated workers' processes, and reading `batch_items`
//! straight from the database.

use crate::common;
use common::gates::Gates;
use common::http::Client;
use serde_json::Value;
use std::time::Duration;

/// The watchdog of these tests: each starts `ferry serve` twice or more.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// A configuration with the gated worker as type `gated` (at most `parallel` processes,
/// one request each), `idempotent_operations = ["gate"]` when `idempotent`, the echo
/// worker, the workflow `gated` (steps `one` and `two` wait at the gates named by the
/// request's `one` and `two`, then `three` echoes), and `state` as given (a whole
/// `[state]` section, or nothing).
pub fn config(gates: &Gates, idempotent: bool, parallel: usize, state: &str) -> String {
    let args: Vec<String> = gates.args(&[]).iter().map(|a| format!("{a:?}")).collect();
    let idempotent = if idempotent { r#"["gate"]"# } else { "[]" };
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
body_limit_bytes = 1048576

{state}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 2
max_in_flight = 4
idempotent_operations = ["echo"]

[workers.gated]
command = "{fault}"
args = [{args}]
[workers.gated.pool]
min_workers = 1
max_workers = {parallel}
max_in_flight = 1
idempotent_operations = {idempotent}

[[workflows]]
id = "gated"
[[workflows.steps]]
name = "one"
worker_type = "gated"
operation = "gate"
input = {{ label = "$request.one" }}
[[workflows.steps]]
name = "two"
worker_type = "gated"
operation = "gate"
input = {{ label = "$request.two" }}
[[workflows.steps]]
name = "three"
worker_type = "echo"
operation = "echo"
"#,
        ferry = common::ferry_bin(),
        fault = common::fault_bin(),
        args = args.join(", ")
    )
}

/// GETs `path` until `pred` holds on its JSON (an event; the watchdog bounds the wait).
pub fn wait_for(c: &mut Client, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut polls = 0u64;
    loop {
        let r = c.request("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        let v = r.json();
        if pred(&v) {
            return v;
        }
        polls += 1;
        if polls % 1_000 == 0 {
            eprintln!("still waiting: {what}; last: {v}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates a batch of the `gate` operation with one item per label and executes it;
/// returns its path.
pub fn start_batch(c: &mut Client, labels: &[String], parallelism: usize) -> (String, String) {
    let items: Vec<Value> = labels
        .iter()
        .map(|l| serde_json::json!({ "label": l }))
        .collect();
    let spec = serde_json::json!({
        "worker_type": "gated", "operation": "gate", "items": items, "parallelism": parallelism
    });
    let r = c.request("POST", "/api/processing/batches", Some(&spec.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/processing/batches/{id}");
    let r = c.request("POST", &format!("{path}/execute"), None);
    assert_eq!(r.status, 202, "{}", r.body);
    (id, path)
}

/// The pids of the gated workers started so far (their `start N PID` log lines).
pub fn worker_pids(gates: &Gates) -> Vec<u32> {
    gates
        .log()
        .iter()
        .filter_map(|l| l.strip_prefix("start ")?.split(' ').nth(1)?.parse().ok())
        .collect()
}

/// Whether `pid` runs: it exists and is not a zombie (a worker orphaned by a killed
/// server is reparented, and its new parent may reap it late or never).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until none of `pids` runs (an event; the watchdog bounds the wait).
pub fn wait_gone(pids: &[u32]) {
    common::eventually("the killed server's workers end", || {
        pids.iter().all(|&p| !running(p))
    });
}

/// How many times `label` was logged with `event`.
pub fn count(gates: &Gates, event: &str, label: &str) -> usize {
    gates.labels(event).iter().filter(|l| *l == label).count()
}

/// One row of `batch_items`, read straight from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbItem {
    /// `idx`.
    pub index: i64,
    /// `status`.
    pub status: String,
    /// `completions`: results stored.
    pub completions: i64,
    /// `finished_by`: the host that stored its end.
    pub finished_by: Option<String>,
    /// `owner`: the host running it now.
    pub owner: Option<String>,
}

/// Runs `f` on a fresh single-thread tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The rows of `batch_items` of batch `id` in the database at `url` (`sqlite://PATH` or
/// `postgres://...`), by index, read with plain SQL (not through the server's store).
pub fn db_items(url: &str, id: &str) -> Vec<DbItem> {
    use sqlx::{Connection, Row};
    block_on(async {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        if url.starts_with("sqlite:") {
            // The server may be writing (lease renewals): wait for its lock.
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let rows = sqlx::query(
            "SELECT idx, status, completions, finished_by, owner FROM batch_items \
             WHERE batch_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let items = rows
            .iter()
            .map(|r| DbItem {
                index: r.get(0),
                status: r.get(1),
                completions: r.get(2),
                finished_by: r.get(3),
                owner: r.get(4),
            })
            .collect();
        conn.close().await.unwrap();
        items
    })
}

/// The `ferry serve` processes a test started, SIGKILLed when the test's watchdog fires
/// (the test's thread, which owns them, is left running then, and would leave them
/// behind when the test binary exits).
#[derive(Clone, Default)]
pub struct Hosts(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl Hosts {
    /// Starts `ferry serve` on the configuration file at `path`.
    pub fn start_file(&self, path: &std::path::Path) -> common::http::Server {
        let server = common::http::Server::start_file(path);
        self.0.lock().unwrap().push(server.pid());
        server
    }

    /// Starts `ferry serve` on `config_text` (in a new temporary folder).
    pub fn start(&self, config_text: &str) -> common::http::Server {
        let server = common::http::Server::start(config_text);
        self.0.lock().unwrap().push(server.pid());
        server
    }

    fn kill_all(&self) {
        for &pid in self.0.lock().unwrap().iter() {
            if running(pid) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

/// [`common::with_watchdog`] with [`WATCHDOG`], and the servers `f` started through its
/// [`Hosts`] killed when the watchdog fires.
pub fn with_hosts(f: impl FnOnce(Hosts) + Send + 'static) {
    let hosts = Hosts::default();
    let inner = hosts.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::with_watchdog(WATCHDOG, move || f(inner))
    }));
    if let Err(panic) = outcome {
        hosts.kill_all();
        std::panic::resume_unwind(panic);
    }
}
