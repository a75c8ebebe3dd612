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
