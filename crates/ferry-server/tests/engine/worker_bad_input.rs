//! Workers that misbehave: each yields its typed error, never a panic or a hang.

use crate::common;

use common::{fault_bin, with_watchdog, WATCHDOG};
use ferry::protocol::{ErrorCode, ProtocolError};
use ferry::worker::{CallError, SpawnError, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::time::Duration;

/// A legacy-dialect `sh` worker that prints `before` (shell commands), then answers its
/// first request with data nested `levels` deep and every later one with `"fine"`; and the
/// error of that first call (which has no deadline: a skipped answer would hang it).
fn legacy_first_answer_nested(levels: usize, before: &str) -> (WorkerProcess, CallError) {
    let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let script = format!(
        r#"read -r _; {before}echo '{{"success": true, "data": {deep}}}'
           while read -r _; do echo '{{"success": true, "data": "fine"}}'; done"#
    );
    let spec = WorkerSpec::new("legacy", "sh", ["-c", script.as_str()])
        .dialect(ferry::worker::Dialect::Legacy);
    let mut w = WorkerProcess::spawn(spec).unwrap();
    let err = w.call("echo", json!(1), |_| {}).unwrap_err();
    (w, err)
}

fn fault_spec(mode: &str) -> WorkerSpec {
    WorkerSpec::new("fault", fault_bin(), [mode])
}

#[test]
fn garbage_lines_are_skipped_and_counted() {
    with_watchdog(WATCHDOG, || {
        let mut w =
            WorkerProcess::spawn(fault_spec("garbage")).expect("garbage before ready is skipped");
        for i in 0..3 {
            let reply = w.call("echo", json!({"i": i}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"i": i}));
        }
        // Three banner lines before ready, one stray line per call.
        assert_eq!(w.skipped_frames(), 6);
        w.shutdown().unwrap();
    });
}

#[test]
fn line_over_the_maximum_is_frame_too_large_and_the_link_recovers() {
    with_watchdog(WATCHDOG, || {
        let mut spec = fault_spec("oversize");
        spec.max_frame = 4096;
        let mut w = WorkerProcess::spawn(spec).unwrap();
        let err = w.call("echo", json!({"first": true}), |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FrameTooLarge, "got {err}");
        let reply = w.call("echo", json!({"second": true}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"second": true}));
    });
}

#[test]
fn an_envelope_line_that_breaks_the_protocol_fails_its_request_not_skipped() {
    with_watchdog(WATCHDOG, || {
        let mut w = WorkerProcess::spawn(fault_spec("bad-attachment")).unwrap();
        let err = w.call("echo", json!({"first": true}), |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Protocol, "got {err}");
        assert!(err.to_string().contains("attachment 0"), "got {err}");
        let reply = w.call("echo", json!({"second": true}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"second": true}));
        assert_eq!(w.skipped_frames(), 0);
    });
}

#[test]
fn an_answer_line_too_deep_to_parse_fails_its_request_instead_of_waiting() {
    with_watchdog(WATCHDOG, || {
        // No deadline: a skipped answer would leave this call waiting for ever (the
        // watchdog would fail the test).
        let mut w = WorkerProcess::spawn(fault_spec("too-deep")).unwrap();
        let err = w.call("echo", json!({"first": true}), |_| {}).unwrap_err();
        assert!(matches!(err, CallError::Codec(_)), "got {err:?}");
        assert!(err.to_string().contains("recursion limit"), "got {err}");
        assert_eq!(w.skipped_frames(), 0);
        let reply = w.call("echo", json!({"second": true}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"second": true}));
    });
}

#[test]
fn an_answer_line_with_a_field_of_the_wrong_type_fails_its_request_and_logs_stay_noise() {
    with_watchdog(WATCHDOG, || {
        let mut w = WorkerProcess::spawn(fault_spec("wrong-type")).unwrap();
        let err = w.call("echo", json!({"first": true}), |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Protocol, "got {err}");
        assert!(err.to_string().contains("json header"), "got {err}");
        // The JSON log line naming the request (no `version`, no `type`) was noise.
        assert_eq!(w.skipped_frames(), 1);
        let reply = w.call("echo", json!({"second": true}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"second": true}));
    });
}

#[test]
fn a_legacy_answer_too_deep_to_parse_fails_its_request_and_prints_stay_noise() {
    with_watchdog(WATCHDOG, || {
        // Past serde_json's own limit: the line cannot be read as JSON at all, but it is an
        // object with a boolean `success`, so it answers the request in flight (no deadline:
        // skipping it would leave the call waiting for ever).
        let (mut w, err) = legacy_first_answer_nested(2000, "echo 'loading {'; ");
        assert!(matches!(err, CallError::Codec(_)), "got {err:?}");
        assert!(err.to_string().contains("recursion limit"), "got {err}");
        assert_eq!(w.skipped_frames(), 1, "the print before it is noise");
        let reply = w.call("echo", json!(2), |_| {}).unwrap();
        assert_eq!(reply.data, json!("fine"));
    });
}

#[test]
fn a_legacy_answer_nested_past_the_limit_fails_its_request_and_the_link_carries_on() {
    with_watchdog(WATCHDOG, || {
        let (mut w, err) = legacy_first_answer_nested(110, "");
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "got {err}");
        let reply = w.call("echo", json!(2), |_| {}).unwrap();
        assert_eq!(reply.data, json!("fine"));
    });
}

#[test]
fn invalid_utf8_lines_are_skipped() {
    with_watchdog(WATCHDOG, || {
        let mut w = WorkerProcess::spawn(fault_spec("invalid-utf8")).unwrap();
        let reply = w.call("echo", json!("ok"), |_| {}).unwrap();
        assert_eq!(reply.data, json!("ok"));
        assert_eq!(w.skipped_frames(), 1);
    });
}

#[test]
fn worker_exiting_before_ready_is_exited_before_ready() {
    with_watchdog(WATCHDOG, || {
        let err = WorkerProcess::spawn(fault_spec("exit-before-ready")).unwrap_err();
        match &err {
            SpawnError::ExitedBeforeReady { status } => {
                assert!(status.contains('3'), "status {status}")
            }
            other => panic!("expected ExitedBeforeReady, got {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::StartupFailed);
    });
}

#[test]
fn worker_never_sending_ready_hits_the_startup_timeout() {
    with_watchdog(WATCHDOG, || {
        let mut spec = fault_spec("never-ready");
        spec.startup_timeout = Duration::from_millis(300);
        let err = WorkerProcess::spawn(spec).unwrap_err();
        assert!(
            matches!(err, SpawnError::StartupTimeout(_)),
            "expected StartupTimeout, got {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::StartupFailed);
    });
}

#[test]
fn worker_dying_mid_response_is_worker_crashed() {
    with_watchdog(WATCHDOG, || {
        let mut w = WorkerProcess::spawn(fault_spec("die-mid-response")).unwrap();
        let err = w.call("echo", json!({}), |_| {}).unwrap_err();
        assert!(
            matches!(err, CallError::WorkerCrashed { .. }),
            "expected WorkerCrashed, got {err:?}"
        );
        assert!(err.code().is_retryable());
        // The link is known broken: later calls fail at once, with the same code.
        let again = w.call("echo", json!({}), |_| {}).unwrap_err();
        assert!(
            matches!(again, CallError::WorkerCrashed { .. }),
            "got {again:?}"
        );
    });
}

#[test]
fn wrong_protocol_version_is_version_mismatch() {
    with_watchdog(WATCHDOG, || {
        let err = WorkerProcess::spawn(fault_spec("wrong-version")).unwrap_err();
        assert!(
            matches!(
                err,
                SpawnError::Codec(ferry::codec::CodecError::Protocol(
                    ProtocolError::VersionMismatch {
                        expected: 1,
                        got: 2
                    }
                ))
            ),
            "expected VersionMismatch, got {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
    });
}

#[test]
fn crash_during_a_request_is_worker_crashed() {
    with_watchdog(WATCHDOG, || {
        let mut w =
            WorkerProcess::spawn(WorkerSpec::new("fault", fault_bin(), ["crash-on-nth", "2"]))
                .unwrap();
        assert_eq!(w.call("echo", json!(1), |_| {}).unwrap().data, json!(1));
        let err = w.call("echo", json!(2), |_| {}).unwrap_err();
        match err {
            CallError::WorkerCrashed { status } => {
                assert!(status.contains("signal"), "aborted: {status}")
            }
            other => panic!("expected WorkerCrashed, got {other:?}"),
        }
    });
}

#[test]
fn hung_worker_times_out_and_is_killed_on_drop() {
    with_watchdog(WATCHDOG, || {
        let mut w = WorkerProcess::spawn(fault_spec("hang")).unwrap();
        let request = ferry::protocol::Envelope::request("", "echo", json!({}));
        let options = ferry::worker::CallOptions::default().timeout(Duration::from_millis(200));
        let err = w.call_with(request, &[], &options, |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        let pid = w.pid();
        drop(w);
        assert!(!common::process_exists(pid));
    });
}

#[test]
fn missing_program_is_a_spawn_error() {
    let err = WorkerProcess::spawn(WorkerSpec::new(
        "x",
        "/nonexistent/worker",
        Vec::<String>::new(),
    ))
    .unwrap_err();
    assert!(matches!(err, SpawnError::CannotStart { .. }), "got {err:?}");
    assert_eq!(err.code(), ErrorCode::StartupFailed);
}

#[test]
fn binary_codec_on_stdio_is_refused_up_front() {
    let mut spec = WorkerSpec::new("echo", common::ferry_bin(), ["worker", "echo"]);
    spec.codec = ferry::codec::CodecKind::MsgPack;
    let err = WorkerProcess::spawn(spec).unwrap_err();
    assert!(
        matches!(
            err,
            SpawnError::Codec(ferry::codec::CodecError::CodecNotLineSafe(_))
        ),
        "got {err:?}"
    );
}

/// `levels` arrays around `1`.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!(1), |inner, _| serde_json::Value::Array(vec![inner]))
}

#[test]
fn data_nested_past_the_limit_is_refused_before_sending_and_the_link_carries_on() {
    use ferry::codec::{CodecKind, MAX_DATA_DEPTH};
    use ferry::transport::TransportKind;
    with_watchdog(WATCHDOG, || {
        for (transport, codec) in [
            (TransportKind::Stdio, CodecKind::Json),
            (TransportKind::Shm, CodecKind::MsgPack),
        ] {
            let mut spec = WorkerSpec::new("echo", common::ferry_bin(), ["worker", "echo"]);
            spec.transport = transport;
            spec.codec = codec;
            let mut w = WorkerProcess::spawn(spec).unwrap();
            let err = w
                .call("echo", nested(MAX_DATA_DEPTH + 1), |_| {})
                .unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::InvalidRequest,
                "{transport:?}: {err}"
            );
            let at_limit = nested(MAX_DATA_DEPTH);
            let reply = w.call("echo", at_limit.clone(), |_| {}).unwrap();
            assert_eq!(reply.data, at_limit, "{transport:?}");
            w.shutdown().unwrap();
        }
    });
}
