//! The host calling real worker processes over stdio: the Rust echo worker and the
//! old design's Python legacy worker.

use crate::common;

use common::{ferry_bin, process_exists, with_watchdog, WATCHDOG};
use ferry::protocol::{Envelope, ErrorCode, MessageType};
use ferry::worker::{CallError, CallOptions, Dialect, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::time::Duration;

fn echo_worker() -> WorkerProcess {
    WorkerProcess::spawn(WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]))
        .expect("echo worker starts")
}

#[test]
fn echo_round_trip_returns_the_data() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let info = w.ready_info().expect("ready received").clone();
        assert_eq!(info.worker_type, "echo");
        assert_eq!(info.pid, w.pid());
        assert!(info.operations.iter().any(|o| o == "echo"));
        for i in 0..100 {
            let data = json!({"i": i, "text": "héllo \"quoted\" \\ / \u{1F980}"});
            let reply = w.call("echo", data.clone(), |_| {}).unwrap();
            assert_eq!(reply.data, data);
            assert_eq!(reply.envelope.kind, MessageType::Response);
        }
        w.shutdown().unwrap();
    });
}

#[test]
fn attachments_round_trip_over_stdio_as_base64() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let request = Envelope::request("", "echo", json!({"kind": "png"}));
        let reply = w
            .call_with(
                request,
                &[&image, b"\n\0raw"],
                &CallOptions::default(),
                |_| {},
            )
            .unwrap();
        assert_eq!(reply.attachments, vec![image, b"\n\0raw".to_vec()]);
        w.shutdown().unwrap();
    });
}

#[test]
fn progress_events_arrive_in_order_before_the_response() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let mut seen = Vec::new();
        let reply = w
            .call("sleep", json!({"ms": 50, "steps": 5}), |e| {
                seen.push(e.data.as_ref().unwrap()["progress"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(seen, vec![0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(reply.data, json!({"slept_ms": 50, "steps": 5}));
        w.shutdown().unwrap();
    });
}

#[test]
fn cancel_on_timeout_reaches_the_running_handler() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
        let options = CallOptions::default().timeout(Duration::from_millis(200));
        let err = w.call_with(request, &[], &options, |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        // Had the cancel not reached the handler, the worker would be busy sleeping for
        // 40 s and this call (allowed 20 s) could not be answered.
        let request = Envelope::request("", "echo", json!({"after": "cancel"}));
        let options = CallOptions::default().timeout(Duration::from_secs(20));
        let reply = w.call_with(request, &[], &options, |_| {}).unwrap();
        assert_eq!(reply.data, json!({"after": "cancel"}));
        w.shutdown().unwrap();
    });
}

#[test]
fn deadline_in_the_request_cancels_at_the_worker() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let mut request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
        request.deadline_ms = Some(100);
        // The host waits longer than the deadline, so the worker's own answer arrives.
        let options = CallOptions::default().timeout(Duration::from_secs(20));
        let err = w.call_with(request, &[], &options, |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled, "got {err}");
        w.shutdown().unwrap();
    });
}

#[test]
fn handler_printing_to_stdout_does_not_break_the_channel() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        for i in 0..20 {
            let reply = w.call("print", json!({"i": i}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"i": i}));
        }
        assert_eq!(
            w.skipped_frames(),
            0,
            "prints went to stderr, not the protocol channel"
        );
        w.shutdown().unwrap();
    });
}

#[test]
fn builtin_operations_answer() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let health = w.call("health", json!(null), |_| {}).unwrap();
        assert_eq!(health.data["status"], "ok");
        let caps = w.call("capabilities", json!(null), |_| {}).unwrap();
        assert_eq!(caps.data["worker_type"], "echo");
        assert!(caps.data["codecs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "json"));
        w.shutdown().unwrap();
    });
}

#[test]
fn handler_errors_keep_their_code() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let err = w
            .call(
                "fail",
                json!({"code": "invalid_request", "message": "data.prompt: required"}),
                |_| {},
            )
            .unwrap_err();
        match err {
            CallError::Remote(body) => {
                assert_eq!(body.code, ErrorCode::InvalidRequest);
                assert_eq!(body.message, "data.prompt: required");
                assert!(!body.retryable);
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        w.shutdown().unwrap();
    });
}

#[test]
fn unknown_operation_is_a_typed_error() {
    with_watchdog(WATCHDOG, || {
        let mut w = echo_worker();
        let err = w.call("no.such.op", json!({}), |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownOperation, "got {err}");
        // The worker keeps serving.
        assert_eq!(w.call("echo", json!(1), |_| {}).unwrap().data, json!(1));
        w.shutdown().unwrap();
    });
}

#[test]
fn shutdown_reaps_the_worker_and_leaves_no_process() {
    with_watchdog(WATCHDOG, || {
        let w = echo_worker();
        let pid = w.pid();
        let status = w.shutdown().unwrap();
        assert!(
            status.success(),
            "clean exit after the shutdown operation, got {status}"
        );
        assert!(
            !process_exists(pid),
            "worker {pid} still exists after shutdown"
        );
    });
}

#[test]
fn dropping_a_worker_kills_and_reaps_it() {
    with_watchdog(WATCHDOG, || {
        let w = echo_worker();
        let pid = w.pid();
        drop(w);
        assert!(!process_exists(pid), "worker {pid} still exists after drop");
    });
}

#[test]
fn legacy_six_line_python_worker_is_served() {
    with_watchdog(WATCHDOG, || {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/legacy_worker.py"
        );
        let mut spec = WorkerSpec::new("legacy", "python3", [script]);
        spec.dialect = Dialect::Legacy;
        let mut w = WorkerProcess::spawn(spec).unwrap();
        assert!(
            w.ready_info().is_none(),
            "legacy workers send no ready event"
        );
        for i in 0..5 {
            let reply = w
                .call("inference", json!({"prompt": "a", "i": i}), |_| {})
                .unwrap();
            assert_eq!(
                reply.data,
                json!({"echo": {"prompt": "a", "i": i}, "operation": "inference"})
            );
        }
        // The legacy worker knows no shutdown operation; it exits on stdin EOF or SIGTERM.
        let pid = w.pid();
        drop(w);
        assert!(!process_exists(pid));
    });
}
