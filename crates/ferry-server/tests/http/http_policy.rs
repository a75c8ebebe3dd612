//! What HTTP clients may reach and hold: operations open to them per worker type,
//! workflows of the configuration file fixed, `[limits]` on what they make the server
//! keep, progress streams bounded for clients that do not read, and requests cancelled
//! at the worker when their client goes away.

use crate::common;

use common::http::{Client, Server};
use common::{with_watchdog, WATCHDOG};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1
max_in_flight = 4

[[workflows]]
id = "from_file"
[[workflows.steps]]
name = "one"
worker_type = "echo"
operation = "echo"
{extra}
"#,
        ferry = common::ferry_bin()
    )
}

/// Polls `path` until `pred` holds on its JSON (an event; the test watchdog bounds it).
fn wait_for(c: &mut Client, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = c.request("GET", path, None).json();
        if pred(&v) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn echo_worker(status: &Value) -> &Value {
    &status["workers"][0]
}

fn inference(c: &mut Client, operation: &str, data: &str) -> common::http::HttpResponse {
    c.request(
        "POST",
        "/api/inference/generate",
        Some(&format!(
            r#"{{"worker_type":"echo","operation":"{operation}","data":{data}}}"#
        )),
    )
}

#[test]
fn built_in_and_administrative_operations_are_not_open_to_clients() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let pid = echo_worker(&c.request("GET", "/api/workers/status", None).json())["pid"].clone();
        for op in [
            "shutdown",
            "health",
            "capabilities",
            "cleanup",
            "status",
            "model.load",
        ] {
            let r = inference(&mut c, op, "{}");
            assert_eq!(r.status, 403, "{op}: {}", r.body);
            assert_eq!(r.error_code(), "not_allowed", "{op}");
        }
        // The same through a batch and an API-made workflow.
        let r = c.request(
            "POST",
            "/api/processing/batches",
            Some(r#"{"worker_type":"echo","operation":"shutdown","items":[{}]}"#),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        let r = c.request(
            "POST",
            "/api/processing/workflows",
            Some(r#"{"id":"evil","steps":[{"name":"a","worker_type":"echo","operation":"shutdown"}]}"#),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        // Nothing reached the worker: the same process still serves.
        let r = inference(&mut c, "echo", r#"{"x":1}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        let status = c.request("GET", "/api/workers/status", None).json();
        assert_eq!(echo_worker(&status)["pid"], pid);
        assert_eq!(echo_worker(&status)["restarts"], 0);
    });
}

#[test]
fn api_operations_open_only_what_the_configuration_lists() {
    with_watchdog(WATCHDOG, || {
        let text = config("").replace(
            "[workers.echo.pool]",
            "api_operations = [\"echo\", \"cleanup\"]\n[workers.echo.pool]",
        );
        let server = Server::start(&text);
        let mut c = server.client();
        assert_eq!(inference(&mut c, "echo", "{}").status, 200);
        assert_eq!(inference(&mut c, "sleep", r#"{"ms":1}"#).status, 403);
        // Named exactly, an administrative operation is open (the echo worker does not
        // serve it: the worker's own answer comes back).
        let r = inference(&mut c, "cleanup", "{}");
        assert_eq!(r.error_code(), "unknown_operation", "{}", r.body);
    });
}

#[test]
fn workflows_of_the_configuration_file_cannot_be_replaced_or_deleted() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let before = c
            .request("GET", "/api/processing/workflows/from_file", None)
            .json();
        let r = c.request(
            "POST",
            "/api/processing/workflows",
            Some(r#"{"id":"from_file","steps":[{"name":"a","worker_type":"echo","operation":"sleep"}]}"#),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        let r = c.request("DELETE", "/api/processing/workflows/from_file", None);
        assert_eq!(r.status, 403, "{}", r.body);
        let after = c
            .request("GET", "/api/processing/workflows/from_file", None)
            .json();
        assert_eq!(before, after);
        // Ids that would not be safe in a URL or a log line are refused.
        for id in ["", "../x", "a b", ".hidden", &"x".repeat(65)] {
            let body = serde_json::json!({"id": id, "steps": [{"name": "a", "worker_type": "echo", "operation": "echo"}]});
            let r = c.request("POST", "/api/processing/workflows", Some(&body.to_string()));
            assert_eq!(r.status, 400, "{id:?}: {}", r.body);
        }
        // An API-made workflow can be deleted.
        let r = c.request(
            "POST",
            "/api/processing/workflows",
            Some(r#"{"id":"mine","steps":[{"name":"a","worker_type":"echo","operation":"echo"}]}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            c.request("DELETE", "/api/processing/workflows/mine", None)
                .status,
            204
        );
    });
}

#[test]
fn limits_cap_what_clients_make_the_server_hold() {
    with_watchdog(WATCHDOG, || {
        let limits = "[limits]\nopen_batches = 2\nopen_batch_bytes = 1000\napi_workflows = 1\n";
        let server = Server::start(&config(limits));
        let mut c = server.client();
        let batch = r#"{"worker_type":"echo","operation":"echo","items":[{"a":1}]}"#;
        assert_eq!(
            c.request("POST", "/api/processing/batches", Some(batch))
                .status,
            201
        );
        assert_eq!(
            c.request("POST", "/api/processing/batches", Some(batch))
                .status,
            201
        );
        let r = c.request("POST", "/api/processing/batches", Some(batch));
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.error_code(), "limit_reached");
        // Bytes: one batch larger than the whole budget.
        let big = format!(
            r#"{{"worker_type":"echo","operation":"echo","items":["{}"]}}"#,
            "x".repeat(2000)
        );
        let b = c.request("GET", "/api/processing/batches", None).json();
        let first = b["batches"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            c.request("DELETE", &format!("/api/processing/batches/{first}"), None)
                .status,
            204
        );
        let r = c.request("POST", "/api/processing/batches", Some(&big));
        assert_eq!(r.error_code(), "limit_reached", "{}", r.body);
        assert!(r.body.contains("open_batch_bytes"), "{}", r.body);
        // Workflows made through the API.
        let wf = |id: &str| {
            format!(
                r#"{{"id":"{id}","steps":[{{"name":"a","worker_type":"echo","operation":"echo"}}]}}"#
            )
        };
        assert_eq!(
            c.request("POST", "/api/processing/workflows", Some(&wf("w1")))
                .status,
            201
        );
        let r = c.request("POST", "/api/processing/workflows", Some(&wf("w2")));
        assert_eq!(r.error_code(), "limit_reached", "{}", r.body);
        // Replacing one's own is not a new one.
        assert_eq!(
            c.request("POST", "/api/processing/workflows", Some(&wf("w1")))
                .status,
            201
        );
    });
}

#[test]
fn a_timeout_names_the_requests_own_deadline() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"sleep","data":{"ms":5000,"steps":50},"deadline_ms":100}"#),
        );
        assert_eq!(r.status, 504, "{}", r.body);
        assert!(r.body.contains("100ms"), "{}", r.body);
        // A step count the handler cannot represent is the client's mistake, not a panic.
        let r = inference(&mut c, "sleep", r#"{"ms":1,"steps":4294967296}"#);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("data.steps"), "{}", r.body);
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends a stream request on a raw connection and returns it without reading anything.
fn open_stream(addr: &str, data: &str) -> TcpStream {
    let body = format!(r#"{{"worker_type":"echo","operation":"sleep","data":{data}}}"#);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/inference/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn a_client_that_does_not_read_its_stream_leaves_the_host_bounded() {
    with_watchdog(Duration::from_secs(600), || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        wait_for(&mut c, "/api/workers/status", |v| {
            echo_worker(v)["state"] == "ready"
        });
        let before = rss_kib(server.pid());
        // 300,000 progress events, as fast as the worker can send them, to a client that
        // reads nothing. With the relay's queue made unbounded (every event kept), the host
        // grew by 68 MiB, four times the 16 MiB bound below; coalesced, it grows by under
        // 2 MiB. Each event costs the debug build some 50 µs of host CPU, so more events
        // would only lengthen the run.
        let stalled = open_stream(&server.addr, r#"{"ms":0,"steps":300000}"#);
        let started = Instant::now();
        wait_for(&mut c, "/api/workers/status", |v| {
            echo_worker(v)["requests_served"].as_u64() >= Some(1)
                && echo_worker(v)["in_flight"] == 0
        });
        let grown = rss_kib(server.pid()).saturating_sub(before);
        eprintln!(
            "300,000 progress events to a stalled client in {:?}: host RSS +{grown} KiB",
            started.elapsed()
        );
        assert!(grown < 16 * 1024, "host grew by {grown} KiB");
        drop(stalled);
    });
}

#[test]
fn dropping_the_stream_cancels_the_request_at_the_worker() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        // Ten minutes of 1 ms steps: only a cancel ends it while the test runs.
        let mut stream = open_stream(&server.addr, r#"{"ms":600000,"steps":600000}"#);
        let mut first = [0u8; 64];
        let n = stream.read(&mut first).unwrap();
        assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"));
        wait_for(&mut c, "/api/workers/status", |v| {
            echo_worker(v)["in_flight"] == 1
        });
        drop(stream);
        let v = wait_for(&mut c, "/api/workers/status", |v| {
            echo_worker(v)["in_flight"] == 0
        });
        assert_eq!(echo_worker(&v)["restarts"], 0, "cancelled, not killed: {v}");
    });
}
