//! One host killed with SIGKILL mid-batch or mid-session and started again on the same
//! configuration (same SQLite file, same host id): the work goes on where it was.
//!
//! Nothing waits on time: the items are held at gates (`common/gates.rs`) until the
//! server is killed, the kill waits for the worker processes to end, and the restarted
//! server releases its previous life's leases at once (same host id), so the waits are
//! for events: log lines, the API's views.

use crate::common;
use crate::support::{
    config, count, db_items, start_batch, wait_for, wait_gone, with_hosts, worker_pids, Hosts,
};
use common::gates::Gates;
use common::http::Server;
use serde_json::json;
use std::path::Path;

/// Items in each batch, and how many are released before the kill.
const ITEMS: usize = 20;
const DONE_BEFORE_KILL: usize = 5;

/// Where the state lives in a run.
#[derive(Debug, Clone, Copy)]
enum StateAt {
    /// `[state] url = "sqlite://DIR/state.db"`, `host_id = "h1"`.
    ExplicitFile,
    /// No `[state]`: `ferry-state.db` beside the configuration file, the hostname (or
    /// `$FERRY_HOST_ID`) as host id: the same in both lives.
    Default,
}

impl StateAt {
    fn section(self, dir: &Path) -> String {
        match self {
            StateAt::ExplicitFile => format!(
                "[state]\nurl = \"sqlite://{}\"\nhost_id = \"h1\"\n",
                dir.join("state.db").display()
            ),
            StateAt::Default => String::new(),
        }
    }

    fn db_file(self, dir: &Path) -> std::path::PathBuf {
        match self {
            StateAt::ExplicitFile => dir.join("state.db"),
            StateAt::Default => dir.join("ferry-state.db"),
        }
    }
}

/// A temporary folder holding `ferry.toml` with `text`; returns it and the file's path.
fn config_dir(text: impl FnOnce(&Path) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("ferry-state-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text(dir.path())).unwrap();
    (dir, path)
}

fn labels() -> Vec<String> {
    (0..ITEMS).map(|i| format!("b{i}")).collect()
}

/// Runs a batch of [`ITEMS`] gated items (parallelism 2) until [`DONE_BEFORE_KILL`] are
/// completed and the next two are held in their workers, SIGKILLs the server, waits for
/// its workers to end, and starts it again on the same configuration file. Returns the
/// new server, the batch's id and path, and the two items that were running.
fn kill_mid_batch(
    hosts: &Hosts,
    gates: &Gates,
    config_path: &Path,
) -> (Server, String, String, [usize; 2]) {
    for i in 0..DONE_BEFORE_KILL {
        gates.release(&format!("b{i}"));
    }
    let server = hosts.start_file(config_path);
    let mut c = server.client();
    let (id, path) = start_batch(&mut c, &labels(), 2);
    // Items are claimed in order, two at a time: the first five pass their gates, the
    // next two wait at theirs.
    let held = [DONE_BEFORE_KILL, DONE_BEFORE_KILL + 1];
    for i in held {
        gates.wait_for(&format!("started b{i}"));
    }
    let before = wait_for(&mut c, &path, "five completed, two running", |v| {
        v["counts"]["completed"] == DONE_BEFORE_KILL && v["counts"]["running"] == 2
    });
    for i in held {
        assert_eq!(before["items"][i]["status"], "running", "{before}");
    }
    let workers = worker_pids(gates);
    assert!(!workers.is_empty(), "{:?}", gates.log());
    drop(c);
    server.kill9();
    // The orphaned workers see their host vanish and end; none of the held items
    // finished meanwhile.
    wait_gone(&workers);
    for i in held {
        assert_eq!(
            count(gates, "finished", &format!("b{i}")),
            0,
            "{:?}",
            gates.log()
        );
    }
    let server = hosts.start_file(config_path);
    (server, id, path, held)
}

fn sqlite_restart_after_sigkill_completes_the_batch(hosts: &Hosts, at: StateAt) {
    let gates = Gates::new();
    let (dir, config_path) = config_dir(|d| config(&gates, true, 2, &at.section(d)));
    let db = at.db_file(dir.path());
    let (server, id, path, held) = kill_mid_batch(hosts, &gates, &config_path);
    assert!(db.is_file(), "{} is missing", db.display());
    let mut c = server.client();
    // The new life answers for the batch its previous life created.
    let v = c.request("GET", &path, None);
    assert_eq!(v.status, 200, "{}", v.body);
    let v = v.json();
    assert_eq!(v["status"], "running", "{v}");
    for i in 0..DONE_BEFORE_KILL {
        assert_eq!(v["items"][i]["status"], "completed", "{v}");
    }
    gates.release_all();
    let done = wait_for(&mut c, &path, "batch completion", |v| {
        v["status"] == "completed"
    });
    assert_eq!(done["counts"]["completed"], ITEMS, "{done}");
    for (i, item) in done["items"].as_array().unwrap().iter().enumerate() {
        assert_eq!(item["status"], "completed", "{done}");
        assert_eq!(
            item["result"],
            json!({ "label": format!("b{i}") }),
            "{done}"
        );
    }
    // The held items ran again (idempotent), every item finished in a worker once.
    for i in held {
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
    // Straight from the file: one result stored per item, all by this host.
    let rows = db_items(&format!("sqlite://{}", db.display()), &id);
    assert_eq!(rows.len(), ITEMS, "{rows:?}");
    let host = rows[0].finished_by.clone();
    for row in &rows {
        assert_eq!(
            (row.status.as_str(), row.completions),
            ("completed", 1),
            "{rows:?}"
        );
        assert!(
            row.finished_by.is_some() && row.finished_by == host,
            "{rows:?}"
        );
    }
    if let StateAt::ExplicitFile = at {
        assert_eq!(host.as_deref(), Some("h1"));
        assert!(!dir.path().join("ferry-state.db").exists());
    }
    server.stop();
}

#[test]
fn sqlite_restart_after_sigkill_completes_the_batch_explicit_url() {
    with_hosts(|hosts| {
        sqlite_restart_after_sigkill_completes_the_batch(&hosts, StateAt::ExplicitFile)
    });
}

#[test]
fn sqlite_restart_after_sigkill_completes_the_batch_default_file() {
    with_hosts(|hosts| sqlite_restart_after_sigkill_completes_the_batch(&hosts, StateAt::Default));
}

#[test]
fn non_idempotent_item_running_at_crash_ends_interrupted() {
    with_hosts(|hosts| {
        let gates = Gates::new();
        let at = StateAt::ExplicitFile;
        let (dir, config_path) = config_dir(|d| config(&gates, false, 2, &at.section(d)));
        let (server, id, path, held) = kill_mid_batch(&hosts, &gates, &config_path);
        let mut c = server.client();
        gates.release_all();
        let done = wait_for(&mut c, &path, "batch completion", |v| {
            v["status"] == "completed"
        });
        assert_eq!(done["counts"]["completed"], ITEMS - 2, "{done}");
        assert_eq!(done["counts"]["interrupted"], 2, "{done}");
        for (i, item) in done["items"].as_array().unwrap().iter().enumerate() {
            if held.contains(&i) {
                assert_eq!(item["status"], "interrupted", "{done}");
                assert_eq!(item["result"], json!(null), "{done}");
                let message = item["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("idempotent_operations"), "{done}");
                // Not run again.
                assert_eq!(
                    count(&gates, "started", &format!("b{i}")),
                    1,
                    "{:?}",
                    gates.log()
                );
            } else {
                assert_eq!(item["status"], "completed", "{done}");
                assert_eq!(
                    item["result"],
                    json!({ "label": format!("b{i}") }),
                    "{done}"
                );
                assert_eq!(
                    count(&gates, "finished", &format!("b{i}")),
                    1,
                    "{:?}",
                    gates.log()
                );
            }
        }
        let rows = db_items(
            &format!("sqlite://{}", at.db_file(dir.path()).display()),
            &id,
        );
        assert_eq!(rows.len(), ITEMS, "{rows:?}");
        for row in &rows {
            let interrupted = held.contains(&usize::try_from(row.index).unwrap());
            let expected = if interrupted {
                ("interrupted", 0)
            } else {
                ("completed", 1)
            };
            assert_eq!((row.status.as_str(), row.completions), expected, "{rows:?}");
            assert_eq!(row.finished_by.as_deref(), Some("h1"), "{rows:?}");
        }
        server.stop();
    });
}

#[test]
fn session_resumes_at_the_running_step_after_restart() {
    with_hosts(|hosts| {
        let gates = Gates::new();
        let at = StateAt::ExplicitFile;
        let (_dir, config_path) = config_dir(|d| config(&gates, true, 2, &at.section(d)));
        gates.release("s1");
        let server = hosts.start_file(&config_path);
        let mut c = server.client();
        let r = c.request(
            "POST",
            "/api/processing/workflows/gated/execute",
            Some(r#"{"one":"s1","two":"s2"}"#),
        );
        assert!(
            r.status == 200 || r.status == 201 || r.status == 202,
            "{}",
            r.body
        );
        let path = format!(
            "/api/processing/sessions/{}",
            r.json()["id"].as_str().unwrap()
        );
        gates.wait_for("started s2");
        let before = wait_for(&mut c, &path, "step two running", |v| {
            v["steps"][0]["status"] == "completed" && v["steps"][1]["status"] == "running"
        });
        assert_eq!(before["status"], "running", "{before}");
        let workers = worker_pids(&gates);
        drop(c);
        server.kill9();
        wait_gone(&workers);
        assert_eq!(count(&gates, "finished", "s2"), 0, "{:?}", gates.log());

        let server = hosts.start_file(&config_path);
        let mut c = server.client();
        // Resumed at step two (idempotent), which waits at its gate again.
        gates.wait_until("step two started again", |log| {
            log.iter().filter(|l| *l == "started s2").count() == 2
        });
        gates.release("s2");
        let done = wait_for(&mut c, &path, "session completion", |v| {
            v["status"] == "completed"
        });
        for step in done["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "completed", "{done}");
        }
        assert_eq!(done["result"], json!({ "label": "s2" }), "{done}");
        // Step one ran once, in the first life only.
        assert_eq!(count(&gates, "started", "s1"), 1, "{:?}", gates.log());
        assert_eq!(count(&gates, "finished", "s1"), 1, "{:?}", gates.log());
        assert_eq!(count(&gates, "finished", "s2"), 1, "{:?}", gates.log());
        server.stop();
    });
}
