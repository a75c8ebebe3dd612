//! The HTTP API against a real `ferry serve` on loopback with real worker processes.

use crate::common;

use common::gates::Gates;
use common::http::{Client, Server};
use common::{with_watchdog, WATCHDOG};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(extra_server: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
body_limit_bytes = 4096
{extra_server}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 2
max_in_flight = 4
idempotent_operations = ["echo"]

[[workflows]]
id = "echo_twice"
[[workflows.steps]]
name = "first"
worker_type = "echo"
operation = "echo"
input = "$request"
[[workflows.steps]]
name = "second"
worker_type = "echo"
operation = "echo"
input = {{ wrapped = "$steps.first", prompt = "$request.prompt" }}
"#,
        ferry = common::ferry_bin()
    )
}

/// [`config`] with the gated worker (`ferry-fault-worker gated`, see `common/gates.rs`) as
/// the worker type `gated`, and the workflow `gated`: steps `one` and `two` wait at the
/// gates named by the request's `one` and `two`, then `three` echoes.
fn gated_config(gates: &Gates, extra_server: &str) -> String {
    let args: Vec<String> = gates.args(&[]).iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{base}
[workers.gated]
command = "{fault}"
args = [{args}]
[workers.gated.pool]
min_workers = 1
max_workers = 4
max_in_flight = 1

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
        base = config(extra_server),
        fault = common::fault_bin(),
        args = args.join(", ")
    )
}

/// Polls `path` until `pred` holds on its JSON (bounded by the test watchdog).
fn wait_for(c: &mut Client, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let limit = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.request("GET", path, None).json();
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < limit, "never happened: {what}; last: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn health_metrics_and_inference() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = c.request("GET", "/health", None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker_types"]["echo"], true);
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"echo","data":{"prompt":"a fox"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["data"], json!({"prompt": "a fox"}));
        let r = c.request("POST", "/api/inference/generate", Some(r#"{"worker_type":"echo","operation":"fail","data":{"code":"invalid_request","message":"data.prompt: required"}}"#));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"nope","operation":"echo"}"#),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        let m = c.request("GET", "/metrics", None);
        assert_eq!(m.status, 200);
        assert!(m.body.contains(r#"ferry_requests_total{worker_type="echo",operation="echo",transport="stdio",outcome="ok"} 1"#), "{}", m.body);
        assert!(m.body.contains("ferry_request_duration_seconds_bucket"));
        assert!(m
            .body
            .contains(r#"ferry_queue_depth{worker_type="echo"} 0"#));
        assert!(m
            .body
            .contains(r#"ferry_worker_restarts_total{worker_type="echo"} 0"#));
        assert!(server.stop().success(), "clean exit on SIGINT");
    });
}

#[test]
fn stream_sends_progress_in_order_then_the_result() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = c.request(
            "POST",
            "/api/inference/stream",
            Some(r#"{"worker_type":"echo","operation":"sleep","data":{"ms":40,"steps":4}}"#),
        );
        assert_eq!(r.status, 200);
        let events: Vec<(String, Value)> = r
            .body
            .split("\n\n")
            .filter_map(|block| {
                let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((name.to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["request", "progress", "progress", "progress", "progress", "result"],
            "{}",
            r.body
        );
        // The first event names the request (for DELETE /api/inference/{request_id}).
        let id = events[0].1["request_id"].as_str().unwrap();
        assert!(id.starts_with("req-"), "{id}");
        let fractions: Vec<f64> = events[1..5]
            .iter()
            .map(|(_, d)| d["progress"].as_f64().unwrap())
            .collect();
        assert_eq!(fractions, [0.25, 0.5, 0.75, 1.0]);
        assert_eq!(events[5].1["data"]["steps"], 4);
        assert_eq!(events[5].1["request_id"], id);
    });
}

#[test]
fn workers_status_and_restart() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let status = c.request("GET", "/api/workers/status", None).json();
        let w = &status["workers"][0];
        let (id, pid) = (
            w["id"].as_str().unwrap().to_owned(),
            w["pid"].as_u64().unwrap(),
        );
        assert_eq!(w["state"], "ready");
        let r = c.request("POST", &format!("/api/workers/restart/{id}"), None);
        assert_eq!(r.status, 202, "{}", r.body);
        wait_for(
            &mut c,
            "/api/workers/status",
            "the worker is replaced",
            |v| {
                v["workers"][0]["state"] == "ready"
                    && v["workers"][0]["pid"].as_u64() != Some(pid)
                    && v["workers"][0]["restarts"] == 1
            },
        );
        let r = c.request("POST", "/api/workers/restart/nobody", None);
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    });
}

#[test]
fn workflows_sessions_and_their_control() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let server = Server::start(&gated_config(&gates, ""));
        let mut c = server.client();
        let list = c.request("GET", "/api/processing/workflows", None).json();
        assert_eq!(list["workflows"].as_array().unwrap().len(), 2);
        assert_eq!(
            c.request("GET", "/api/processing/workflows/echo_twice", None)
                .json()["steps"][1]["name"],
            "second"
        );
        assert_eq!(
            c.request("GET", "/api/processing/workflows/nope", None)
                .status,
            404
        );

        // Create a workflow, then run it.
        let new =
            r#"{"id":"single","steps":[{"name":"only","worker_type":"echo","operation":"echo"}]}"#;
        assert_eq!(
            c.request("POST", "/api/processing/workflows", Some(new))
                .status,
            201
        );
        let bad =
            r#"{"id":"broken","steps":[{"name":"x","worker_type":"ghost","operation":"echo"}]}"#;
        let r = c.request("POST", "/api/processing/workflows", Some(bad));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost"));

        // Input mapping between steps.
        let s = c
            .request(
                "POST",
                "/api/processing/workflows/echo_twice/execute",
                Some(r#"{"prompt":"fox"}"#),
            )
            .json();
        let path = format!("/api/processing/sessions/{}", s["id"].as_str().unwrap());
        let done = wait_for(&mut c, &path, "completion", |v| v["status"] == "completed");
        assert_eq!(
            done["result"],
            json!({"wrapped": {"prompt": "fox"}, "prompt": "fox"})
        );
        assert!(done["steps"][0]["duration_ms"].as_f64().is_some());

        // Pause takes effect between steps: asked for while step one is held in the
        // worker, it waits for that step to end and stops before step two.
        let s = c
            .request(
                "POST",
                "/api/processing/workflows/gated/execute",
                Some(r#"{"one":"pause-1","two":"pause-2"}"#),
            )
            .json();
        let path = format!("/api/processing/sessions/{}", s["id"].as_str().unwrap());
        let control = format!("{path}/control");
        gates.wait_for("started pause-1");
        assert_eq!(
            c.request("POST", &control, Some(r#"{"action":"pause"}"#))
                .status,
            200
        );
        let pausing = c.request("GET", &path, None).json();
        assert_eq!(
            (&pausing["status"], &pausing["steps"][0]["status"]),
            (&json!("running"), &json!("running")),
            "step one is still in the worker: {pausing}"
        );
        assert_eq!(pausing["pause_requested"], true, "{pausing}");
        gates.release("pause-1");
        let paused = wait_for(&mut c, &path, "paused", |v| v["status"] == "paused");
        assert_eq!(paused["steps"][0]["status"], "completed");
        assert_eq!(paused["steps"][1]["status"], "pending");
        assert!(
            !gates.labels("started").contains(&"pause-2".to_owned()),
            "step two did not start while paused: {:?}",
            gates.log()
        );
        assert_eq!(
            c.request("POST", &control, Some(r#"{"action":"resume"}"#))
                .status,
            200
        );
        gates.wait_for("started pause-2");
        gates.release("pause-2");
        let done = wait_for(&mut c, &path, "completion after resume", |v| {
            v["status"] == "completed"
        });
        assert_eq!(done["result"], json!({"label": "pause-2"}));
        let r = c.request("POST", &control, Some(r#"{"action":"pause"}"#));
        assert_eq!((r.status, r.error_code().as_str()), (409, "invalid_state"));

        // Cancel stops the running step (held in the worker until cancelled) at once, and
        // the cancel reaches the worker.
        let s = c
            .request(
                "POST",
                "/api/processing/workflows/gated/execute",
                Some(r#"{"one":"cancel-1","two":"cancel-2"}"#),
            )
            .json();
        let path = format!("/api/processing/sessions/{}", s["id"].as_str().unwrap());
        gates.wait_for("started cancel-1");
        assert_eq!(
            c.request(
                "POST",
                &format!("{path}/control"),
                Some(r#"{"action":"cancel"}"#)
            )
            .status,
            200
        );
        let cancelled = wait_for(&mut c, &path, "cancelled", |v| v["status"] == "cancelled");
        assert_eq!(cancelled["steps"][0]["status"], "cancelled");
        gates.wait_for("cancelled cancel-1");

        // Restart runs it again from the first step.
        let r = c
            .request(
                "POST",
                &format!("{path}/control"),
                Some(r#"{"action":"restart"}"#),
            )
            .json();
        assert_eq!(r["steps"][0]["status"], "pending", "{r}");
        gates.wait_until("step one runs again", |log| {
            log.iter().filter(|l| *l == "started cancel-1").count() == 2
        });
        wait_for(&mut c, &path, "running again", |v| v["status"] == "running");
        assert_eq!(c.request("DELETE", &path, None).status, 204);
        assert_eq!(c.request("GET", &path, None).status, 404);
        // Whatever the deleted session left in the worker may end now.
        gates.release_all();
        assert!(
            c.request("GET", "/api/processing/sessions", None).json()["sessions"]
                .as_array()
                .unwrap()
                .len()
                >= 2
        );
        let r = c.request(
            "POST",
            "/api/processing/sessions/nope/control",
            Some(r#"{"action":"pause"}"#),
        );
        assert_eq!(r.status, 404);
    });
}

#[test]
fn batch_of_200_with_10_cancelled_midway() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let server = Server::start(
            &gated_config(&gates, "")
                .replace("body_limit_bytes = 4096", "body_limit_bytes = 1048576"),
        );
        let mut c = server.client();
        // Every item waits at its own gate; all are released but the ten to be cancelled,
        // which therefore cannot finish before the cancel, however the items are scheduled.
        let items: Vec<Value> = (0..200)
            .map(|i| json!({"label": format!("b{i}")}))
            .collect();
        let to_cancel: Vec<usize> = (180..190).collect();
        for i in (0..200).filter(|i| !to_cancel.contains(i)) {
            gates.release(&format!("b{i}"));
        }
        let spec = json!({"worker_type": "gated", "operation": "gate", "items": items, "parallelism": 4, "priority": "low"});
        let b = c.request("POST", "/api/processing/batches", Some(&spec.to_string()));
        assert_eq!(b.status, 201, "{}", b.body);
        let id = b.json()["id"].as_str().unwrap().to_owned();
        let path = format!("/api/processing/batches/{id}");
        assert_eq!(c.request("GET", &path, None).json()["status"], "pending");
        assert_eq!(
            c.request("POST", &format!("{path}/execute"), None).status,
            202
        );
        // Midway: twenty done, or one of the ten already running (held at its gate, which
        // may hold up the rest).
        wait_for(&mut c, &path, "some progress", |v| {
            v["counts"]["completed"].as_u64().unwrap_or(0) >= 20
                || to_cancel
                    .iter()
                    .any(|&i| v["items"][i]["status"] == "running")
        });
        let r = c.request(
            "POST",
            &format!("{path}/cancel"),
            Some(&json!({ "items": to_cancel }).to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let done = wait_for(&mut c, &path, "batch completion", |v| {
            v["status"] == "completed"
        });
        assert_eq!(done["counts"]["completed"], 190, "{done}");
        assert_eq!(done["counts"]["cancelled"], 10);
        assert_eq!(done["progress"], 1.0);
        for &i in &to_cancel {
            assert_eq!(done["items"][i]["status"], "cancelled");
        }
        assert_eq!(done["items"][0]["result"]["label"], "b0");
        // Those of the ten that had reached a worker were cancelled there; none finished.
        let started = gates.labels("started");
        for &i in &to_cancel {
            let label = format!("b{i}");
            if started.contains(&label) {
                gates.wait_for(&format!("cancelled {label}"));
            }
        }
        let finished = gates.labels("finished");
        assert_eq!(finished.len(), 190, "{finished:?}");
        assert!(
            to_cancel
                .iter()
                .all(|i| !finished.contains(&format!("b{i}"))),
            "{finished:?}"
        );
        let r = c.request("POST", &format!("{path}/execute"), None);
        assert_eq!((r.status, r.error_code().as_str()), (409, "invalid_state"));
        assert_eq!(c.request("DELETE", &path, None).status, 204);
        assert_eq!(c.request("GET", &path, None).status, 404);
        let r = c.request(
            "POST",
            "/api/processing/batches",
            Some(r#"{"workflow":"ghost","items":[]}"#),
        );
        assert_eq!(r.status, 404);
    });
}

#[test]
fn bad_requests_get_the_right_status_and_code() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = c.request("POST", "/api/inference/generate", Some("{not json"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"));
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":5,"operation":"echo"}"#),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong types"));
        let big = format!(
            r#"{{"worker_type":"echo","operation":"echo","data":"{}"}}"#,
            "x".repeat(10_000)
        );
        let r = c.request("POST", "/api/inference/generate", Some(&big));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (413, "payload_too_large")
        );
        let r = c.raw("POST", "/api/inference/generate", Some(b"{}"), "text/plain");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (415, "unsupported_media_type")
        );
        let r = c.request("GET", "/api/no/such/route", None);
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
        let r = c.request(
            "POST",
            "/api/processing/sessions/x/control",
            Some(r#"{"action":"explode"}"#),
        );
        assert_eq!(
            r.status, 400,
            "an unknown action is invalid before the id is looked up"
        );
        let r = c.request("GET", "/api/sdxl/enhanced/schedulers", None);
        assert_eq!((r.status, r.error_code().as_str()), (503, "unavailable"));
    });
}

#[test]
fn bearer_token_guards_the_api() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(r#"token = "s3cret""#));
        let mut c = server.client();
        let r = c.request("GET", "/api/workers/status", None);
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
        let mut wrong = server.client().with_token("guess");
        assert_eq!(
            wrong.request("GET", "/api/workers/status", None).status,
            401
        );
        let mut ok = server.client().with_token("s3cret");
        assert_eq!(ok.request("GET", "/api/workers/status", None).status, 200);
        assert_eq!(
            c.request("GET", "/health", None).status,
            200,
            "health stays open for probes"
        );
    });
}

#[test]
fn invalid_config_is_refused_at_start_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(
        &path,
        "[workers.echo]\ncommand = \"x\"\n[workers.echo.pool]\nmin_workers = 3\nmax_workers = 2\n",
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let out = std::process::Command::new(common::ferry_bin())
            .args([cmd, "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "ferry.toml:4: workers.echo.pool.min_workers: must not exceed max_workers"
            ),
            "{cmd}: {err}"
        );
    }
    std::fs::write(&path, "[server]\nbind = \"127.0.0.1:8080\"\nmystery = 1\n").unwrap();
    let out = std::process::Command::new(common::ferry_bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3: mystery: unknown field"), "{err}");
}

#[test]
fn worker_types_over_socket_and_tcp_serve_through_the_api() {
    with_watchdog(WATCHDOG, || {
        let cfg = format!(
            r#"
[server]
bind = "127.0.0.1:0"
[workers.sock]
command = "{ferry}"
args = ["worker", "echo"]
transport = "socket"
codec = "msgpack"
abstract_socket = true
[workers.net]
command = "{ferry}"
args = ["worker", "echo"]
transport = "tcp"
codec = "bincode"
tcp_listen = "127.0.0.1:0"
"#,
            ferry = common::ferry_bin()
        );
        let server = Server::start(&cfg);
        let mut c = server.client();
        for wt in ["sock", "net"] {
            let body =
                format!(r#"{{"worker_type":"{wt}","operation":"echo","data":{{"via":"{wt}"}}}}"#);
            let r = c.request("POST", "/api/inference/generate", Some(&body));
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["data"]["via"], wt);
        }
        let m = c.request("GET", "/metrics", None).body;
        assert!(
            m.contains(r#"transport="socket""#) && m.contains(r#"transport="tcp""#),
            "{m}"
        );
    });
}
