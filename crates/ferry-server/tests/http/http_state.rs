//! Durable state over HTTP: the default SQLite file, `Idempotency-Key`, the probes.

use crate::common;

use common::http::Server;
use common::{with_watchdog, WATCHDOG};
use serde_json::json;

fn config(state: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
{state}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1
"#,
        ferry = common::ferry_bin()
    )
}

#[test]
fn probes_say_live_and_ready_with_the_state_backend() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("[state]\nurl = \"memory\""));
        let mut c = server.client();
        let live = c.request("GET", "/health/live", None);
        assert_eq!(live.status, 200, "{}", live.body);
        assert_eq!(live.json()["status"], "live");
        let ready = c.request("GET", "/health/ready", None);
        assert_eq!(ready.status, 200, "{}", ready.body);
        let body = ready.json();
        assert_eq!(body["status"], "ready");
        assert_eq!(body["state"]["ready"], true);
        assert_eq!(body["state"]["backend"], "memory");
        assert_eq!(body["worker_types"]["echo"], true);
    });
}

#[test]
fn a_retried_post_with_the_same_idempotency_key_gets_the_first_answer() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let spec =
            json!({"worker_type": "echo", "operation": "echo", "items": [{"n": 1}]}).to_string();
        let first = c.request_with_headers(
            "POST",
            "/api/processing/batches",
            Some(&spec),
            &[("Idempotency-Key", "create-batch-1")],
        );
        assert_eq!(first.status, 201, "{}", first.body);
        let again = c.request_with_headers(
            "POST",
            "/api/processing/batches",
            Some(&spec),
            &[("Idempotency-Key", "create-batch-1")],
        );
        assert_eq!(again.status, 201, "{}", again.body);
        assert_eq!(
            again.json()["id"],
            first.json()["id"],
            "the same batch, not a second one"
        );
        let all = c.request("GET", "/api/processing/batches", None).json();
        assert_eq!(all["batches"].as_array().unwrap().len(), 1, "{all}");
        // The same key for another body is refused; a new key runs.
        let other =
            json!({"worker_type": "echo", "operation": "echo", "items": [{"n": 2}]}).to_string();
        let reused = c.request_with_headers(
            "POST",
            "/api/processing/batches",
            Some(&other),
            &[("Idempotency-Key", "create-batch-1")],
        );
        assert_eq!(reused.status, 422, "{}", reused.body);
        assert_eq!(reused.error_code(), "idempotency_key_reused");
        let fresh = c.request_with_headers(
            "POST",
            "/api/processing/batches",
            Some(&other),
            &[("Idempotency-Key", "create-batch-2")],
        );
        assert_eq!(fresh.status, 201, "{}", fresh.body);
        assert_ne!(fresh.json()["id"], first.json()["id"]);
        // A key that is not a header token is a clear 400.
        let bad = c.request_with_headers(
            "POST",
            "/api/processing/batches",
            Some(&other),
            &[("Idempotency-Key", &"k".repeat(300))],
        );
        assert_eq!(bad.status, 400, "{}", bad.body);
    });
}

#[test]
fn the_default_state_is_a_sqlite_file_beside_the_configuration() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let spec =
            json!({"worker_type": "echo", "operation": "echo", "items": [{"n": 1}]}).to_string();
        assert_eq!(
            c.request("POST", "/api/processing/batches", Some(&spec))
                .status,
            201
        );
        let ready = c.request("GET", "/health/ready", None).json();
        assert_eq!(ready["state"]["backend"], "sqlite", "{ready}");
        let db = server.config_dir().join("ferry-state.db");
        assert!(db.is_file(), "{} missing", db.display());
    });
}

/// Polls session `path` until `pred` holds (the session runs in the server; no timing is
/// assumed, only a generous bound for a hung server).
fn session_when(
    c: &mut common::http::Client,
    path: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = c.request("GET", path, None).json();
        if pred(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < limit,
            "never happened; last: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A finished session that is no longer in the server's memory (here: the server was
/// restarted) restarts from its first step, as one still in memory does.
#[test]
fn a_finished_session_restarts_after_the_server_restarted() {
    with_watchdog(WATCHDOG, || {
        let text = format!(
            "{}\n[[workflows]]\nid = \"twice\"\n\n[[workflows.steps]]\nname = \"first\"\n\
             worker_type = \"echo\"\noperation = \"echo\"\ninput = \"$request\"\n\n\
             [[workflows.steps]]\nname = \"second\"\nworker_type = \"echo\"\n\
             operation = \"echo\"\ninput = {{ wrapped = \"$steps.first\" }}\n",
            config("")
        );
        // A folder of the test's own: the second server starts on the same file and finds
        // the first one's state database beside it.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(&file, text).unwrap();
        let server = Server::start_file(&file);
        let mut c = server.client();
        let s = c
            .request(
                "POST",
                "/api/processing/workflows/twice/execute",
                Some(r#"{"n": 1}"#),
            )
            .json();
        let path = format!("/api/processing/sessions/{}", s["id"].as_str().unwrap());
        let done = session_when(&mut c, &path, |v| v["status"] == "completed");
        assert_eq!(done["result"], json!({"wrapped": {"n": 1}}));
        assert!(server.stop().success());

        let server = Server::start_file(&file);
        let mut c = server.client();
        let again = c.request(
            "POST",
            &format!("{path}/control"),
            Some(r#"{"action":"restart"}"#),
        );
        assert_eq!(again.status, 200, "{}", again.body);
        let again = again.json();
        // (Its steps may already have run again by the time the answer is written.)
        assert_eq!(again["created_at"], done["created_at"]);
        let redone = session_when(&mut c, &path, |v| v["status"] == "completed");
        assert_eq!(redone["result"], json!({"wrapped": {"n": 1}}));
        // A new run: its first step started after the first run's.
        let started =
            |v: &serde_json::Value| v["steps"][0]["started_at"].as_str().unwrap().to_owned();
        assert!(started(&redone) > started(&done), "{redone} / {done}");
        // The other controls of a finished session are refused as before.
        let pause = c.request(
            "POST",
            &format!("{path}/control"),
            Some(r#"{"action":"pause"}"#),
        );
        assert_eq!(
            (pause.status, pause.error_code().as_str()),
            (409, "invalid_state")
        );
    });
}
