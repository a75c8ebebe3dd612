//! The host driving the Python echo worker (`python -m ferry_worker.echo`, the
//! `ferry_worker` package of `workers/`) over every transport this build has and every codec
//! that fits each transport's framing. New transports are covered as soon as they join
//! `TransportKind::ALL`.
//!
//! Needs the project's virtual environment (see `tests/common/python.rs`): `scripts/test`
//! sets it up; without it these tests print a notice and pass as skipped.

use crate::common;
use crate::common::python as python_env;

use common::{ferry_bin, process_exists, with_watchdog};
use ferry::codec::CodecKind;
use ferry::protocol::{Envelope, ErrorCode, MessageType};
use ferry::transport::TransportKind;
use ferry::worker::{CallError, CallOptions, WorkerProcess, WorkerSpec};
use python_env::python_or_skip;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Python workers start in tens of milliseconds each and every test runs one per case.
const LIMIT: Duration = Duration::from_secs(180);

fn spawn(python: &Path, transport: TransportKind, codec: CodecKind) -> WorkerProcess {
    let mut spec = WorkerSpec::new(
        "echo",
        python.display().to_string(),
        ["-m", "ferry_worker.echo"],
    );
    spec.worker_id = format!("py-echo-{transport}-{codec}");
    spec.transport = transport;
    spec.codec = codec;
    WorkerProcess::spawn(spec)
        .unwrap_or_else(|e| panic!("python echo worker over {transport}/{codec} starts: {e}"))
}

/// Runs `check` against a fresh Python echo worker for every case, under a watchdog.
fn for_every_case(
    test: &str,
    check: impl Fn(&mut WorkerProcess, TransportKind, CodecKind) + Send + 'static,
) {
    let Some(python) = python_or_skip(test) else {
        return;
    };
    with_watchdog(LIMIT, move || {
        for (transport, codec) in python_env::transport_codec_cases() {
            let mut worker = spawn(&python, transport, codec);
            check(&mut worker, transport, codec);
            let status = worker.shutdown().expect("shutdown");
            assert!(
                status.success(),
                "{transport}/{codec}: clean exit, got {status}"
            );
        }
    });
}

fn call_with_timeout(
    w: &mut WorkerProcess,
    request: Envelope,
    attachments: &[&[u8]],
    timeout: Duration,
) -> Result<ferry::worker::Response, CallError> {
    let options = CallOptions::default().timeout(timeout);
    w.call_with(request, attachments, &options, |_| {})
}

#[test]
fn ready_announces_the_python_runtime_and_its_operations() {
    for_every_case("ready", |w, t, c| {
        let info = w.ready_info().expect("ready received").clone();
        assert_eq!(info.worker_type, "echo", "{t}/{c}");
        assert_eq!(info.pid, w.pid(), "{t}/{c}");
        assert_eq!(
            info.operations,
            ["echo", "sleep", "fail", "print", "async_echo"]
        );
        assert!(
            info.runtime
                .as_deref()
                .is_some_and(|r| r.starts_with("ferry-python/")),
            "{t}/{c}: runtime {:?}",
            info.runtime
        );
        assert!(info.codecs.iter().any(|x| x == c.as_str()));
        let caps = w.call("capabilities", json!(null), |_| {}).unwrap();
        assert_eq!(caps.data["worker_type"], "echo");
        let health = w.call("health", json!(null), |_| {}).unwrap();
        assert_eq!(health.data["status"], "ok");
    });
}

#[test]
fn echo_round_trip_returns_data_and_attachments() {
    for_every_case("echo round trip", |w, t, c| {
        for i in 0..50 {
            let data =
                json!({"i": i, "text": "héllo \"quoted\" \\ / \u{1F980}", "f": 0.5, "n": null});
            let reply = w.call("echo", data.clone(), |_| {}).unwrap();
            assert_eq!(reply.data, data, "{t}/{c}");
            assert_eq!(reply.envelope.kind, MessageType::Response);
        }
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
        assert_eq!(reply.data, json!({"kind": "png"}), "{t}/{c}");
        assert_eq!(
            reply.attachments,
            vec![image, b"\n\0raw".to_vec()],
            "{t}/{c}"
        );
    });
}

#[test]
fn async_handler_answers() {
    for_every_case("async handler", |w, t, c| {
        for i in 0..5 {
            let reply = w.call("async_echo", json!({"i": i}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"i": i}), "{t}/{c}");
        }
    });
}

#[test]
fn progress_events_arrive_in_order_before_the_response() {
    for_every_case("progress", |w, t, c| {
        let mut seen = Vec::new();
        let reply = w
            .call("sleep", json!({"ms": 50, "steps": 5}), |e| {
                assert_eq!(e.event_name.as_deref(), Some("progress"));
                seen.push(e.data.as_ref().unwrap()["progress"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(seen, vec![0.2, 0.4, 0.6, 0.8, 1.0], "{t}/{c}");
        assert_eq!(reply.data, json!({"slept_ms": 50, "steps": 5}));
    });
}

#[test]
fn cancel_on_timeout_reaches_the_running_python_handler() {
    for_every_case("cancel", |w, t, c| {
        let request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
        let err = call_with_timeout(w, request, &[], Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{t}/{c}: {err}");
        // Had the cancel not reached the handler, it would sleep for 40 s and this call
        // (allowed 20 s) could not be answered.
        let request = Envelope::request("", "echo", json!({"after": "cancel"}));
        let reply = call_with_timeout(w, request, &[], Duration::from_secs(20)).unwrap();
        assert_eq!(reply.data, json!({"after": "cancel"}), "{t}/{c}");
    });
}

#[test]
fn deadline_in_the_request_cancels_the_python_handler() {
    for_every_case("deadline", |w, t, c| {
        let mut request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
        request.deadline_ms = Some(100);
        let err = call_with_timeout(w, request, &[], Duration::from_secs(20)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled, "{t}/{c}: {err}");
    });
}

#[test]
fn handler_exceptions_become_typed_errors() {
    for_every_case("exceptions", |w, t, c| {
        let cases = [
            (
                json!({"raise": "ValueError", "message": "data.prompt: required"}),
                ErrorCode::InvalidRequest,
                "data.prompt: required",
            ),
            (
                json!({"raise": "TypeError", "message": "seed must be int"}),
                ErrorCode::InvalidRequest,
                "seed must be int",
            ),
            (
                json!({"raise": "RuntimeError", "message": "CUDA out of memory"}),
                ErrorCode::Internal,
                "RuntimeError: CUDA out of memory",
            ),
            (
                json!({"code": "overloaded", "message": "queue full"}),
                ErrorCode::Overloaded,
                "queue full",
            ),
            (
                json!({"data": "not even a dict"}),
                ErrorCode::Internal,
                "requested failure",
            ),
        ];
        for (data, code, message) in cases {
            match w.call("fail", data, |_| {}).unwrap_err() {
                CallError::Remote(body) => {
                    assert_eq!(
                        (body.code, body.message.as_str()),
                        (code, message),
                        "{t}/{c}"
                    );
                    assert_eq!(body.retryable, code.is_retryable());
                }
                other => panic!("{t}/{c}: expected a remote error, got {other:?}"),
            }
        }
        let err = w.call("no.such.op", json!({}), |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownOperation, "{t}/{c}");
        // The worker keeps serving after errors.
        assert_eq!(w.call("echo", json!(1), |_| {}).unwrap().data, json!(1));
    });
}

#[test]
fn handler_printing_to_stdout_does_not_break_the_channel() {
    for_every_case("print", |w, t, c| {
        for i in 0..20 {
            let reply = w.call("print", json!({"i": i}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"i": i}), "{t}/{c}");
        }
        assert_eq!(
            w.skipped_frames(),
            0,
            "{t}/{c}: print() and os.write(1) went to stderr, not the protocol channel"
        );
    });
}

#[test]
fn attachment_of_16_mib_round_trips() {
    for_every_case("16 MiB attachment", |w, t, c| {
        let big: Vec<u8> = (0..16u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let request = Envelope::request("", "echo", json!({"name": "latents.bin"}));
        let reply = call_with_timeout(w, request, &[&big], Duration::from_secs(60)).unwrap();
        assert_eq!(reply.data, json!({"name": "latents.bin"}), "{t}/{c}");
        assert_eq!(reply.attachments.len(), 1, "{t}/{c}");
        assert!(
            reply.attachments[0] == big,
            "{t}/{c}: attachment bytes differ"
        );
    });
}

#[test]
fn shutdown_exits_cleanly_and_leaves_no_process() {
    for_every_case("shutdown", |w, _, _| {
        // `for_every_case` asserts the clean exit; here only that the process is real.
        assert!(process_exists(w.pid()));
    });
}

/// The pids of `pid`'s children (Linux `/proc/PID/task/TID/children`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` is running (a zombie waiting for a reaper counts as gone).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
    }
}

#[test]
fn python_worker_exits_by_itself_when_its_host_is_killed() {
    let Some(python) = python_or_skip("host killed") else {
        return;
    };
    with_watchdog(LIMIT, move || {
        for (transport, codec) in python_env::transport_codec_cases() {
            host_killed_mid_request(&python, transport, codec);
        }
    });
}

fn host_killed_mid_request(python: &Path, transport: TransportKind, codec: CodecKind) {
    // The host is a `ferry call` process, killed with SIGKILL while the worker's handler runs.
    let cmd = format!("{} -m ferry_worker.echo", python.display());
    let mut host = Command::new(ferry_bin())
        .args([
            "call",
            "--transport",
            transport.as_str(),
            "--codec",
            codec.as_str(),
        ])
        .args(["--cmd", &cmd, "sleep", r#"{"ms": 600000, "steps": 60000}"#])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry call starts");
    let mut stderr = BufReader::new(host.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("host stderr");
        assert!(n > 0, "{transport}/{codec}: host ended before progress");
        if line.starts_with("progress") {
            break;
        }
    }
    let workers = children_of(host.id());
    assert_eq!(
        workers.len(),
        1,
        "{transport}/{codec}: one worker, got {workers:?}"
    );
    let worker = workers[0];
    host.kill().expect("kill host");
    host.wait().expect("reap host");
    drop(stderr);
    while process_running(worker) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
