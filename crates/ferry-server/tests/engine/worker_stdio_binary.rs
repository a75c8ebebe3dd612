//! The host calling real worker processes over stdio switched to length-prefixed binary
//! frames after `ready` (`stdio_framing = "length_prefixed"`): the Rust echo worker
//! accepts the offer; the plain Python worker of docs/protocol.md section 8 ignores it and
//! is served over NDJSON as before.

use crate::common;

use common::{ferry_bin, with_watchdog, WATCHDOG};
use ferry::codec::CodecKind;
use ferry::protocol::{Envelope, ErrorCode, FrameHeader, StdioFraming};
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::time::Duration;

fn binary_echo_worker(codec: CodecKind, frame_header: FrameHeader) -> WorkerProcess {
    let mut spec = WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]);
    spec.codec = codec;
    spec.stdio_framing = StdioFraming::LengthPrefixed;
    spec.frame_header = frame_header;
    WorkerProcess::spawn(spec).expect("echo worker starts")
}

#[test]
fn the_rust_echo_worker_switches_to_binary_frames_in_every_codec() {
    with_watchdog(WATCHDOG, || {
        for codec in CodecKind::ALL {
            for header in [FrameHeader::Envelope, FrameHeader::Compact] {
                let mut w = binary_echo_worker(codec, header);
                let info = w.ready_info().expect("ready received").clone();
                assert_eq!(info.stdio_framing, Some(StdioFraming::LengthPrefixed));
                assert_eq!(info.stdio_codec.as_deref(), Some(codec.as_str()));
                assert_eq!(
                    info.frame_header,
                    Some(header).filter(|h| *h == FrameHeader::Compact)
                );
                // Raw attachments, with bytes a line link could not carry unencoded.
                let image: Vec<u8> = (0..1_100_000u32).map(|i| (i % 251) as u8).collect();
                for i in 0..5 {
                    let data = json!({"i": i, "text": "line\nbreak h\u{e9}llo"});
                    let reply = w
                        .call_with(
                            Envelope::request("", "echo", data.clone()),
                            &[&image, b"\n\0raw"],
                            &CallOptions::default(),
                            |_| {},
                        )
                        .unwrap();
                    assert_eq!(reply.data, data, "{codec} {header}");
                    assert_eq!(reply.attachments, vec![image.clone(), b"\n\0raw".to_vec()]);
                }
                w.shutdown().unwrap();
            }
        }
    });
}

#[test]
fn events_cancels_and_prints_work_after_the_switch() {
    with_watchdog(WATCHDOG, || {
        let mut w = binary_echo_worker(CodecKind::MsgPack, FrameHeader::Compact);
        let mut seen = Vec::new();
        let reply = w
            .call("sleep", json!({"ms": 50, "steps": 5}), |e| {
                seen.push(e.data.as_ref().unwrap()["progress"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(seen, vec![0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(reply.data, json!({"slept_ms": 50, "steps": 5}));
        let request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
        let options = CallOptions::default().timeout(Duration::from_millis(200));
        let err = w.call_with(request, &[], &options, |_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        for i in 0..5 {
            let reply = w.call("print", json!({"i": i}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"i": i}));
        }
        assert_eq!(w.skipped_frames(), 0);
        w.shutdown().unwrap();
    });
}

/// The worker of docs/protocol.md section 8 reads only `FERRY_CODEC` (still `json`) and
/// never answers the offer: the link stays on NDJSON.
#[test]
fn the_plain_python_worker_of_the_docs_ignores_the_offer_and_keeps_ndjson() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    let code = doc
        .split("## 8. A complete worker in Python, without the SDK\n\n```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("section 8 holds a python block")
        .to_owned();
    with_watchdog(WATCHDOG, move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc_worker.py");
        std::fs::write(&path, code).unwrap();
        let mut spec = WorkerSpec::new("echo", "python3", [path.display().to_string()]);
        spec.codec = CodecKind::MsgPack;
        spec.stdio_framing = StdioFraming::LengthPrefixed;
        let mut w = WorkerProcess::spawn(spec).expect("doc worker starts");
        let info = w.ready_info().unwrap().clone();
        assert_eq!((info.stdio_framing, info.stdio_codec), (None, None));
        let reply = w.call("echo", json!({"a": [1, 2]}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"a": [1, 2]}));
        w.shutdown().unwrap();
    });
}

/// The Python runtime (`ferry_worker`, over the same Rust `serve_link`) accepts the offer.
#[test]
fn the_python_echo_worker_switches_to_binary_frames() {
    let Some(python) = common::python::python_or_skip("python echo over binary stdio") else {
        return;
    };
    with_watchdog(WATCHDOG, move || {
        let mut spec = WorkerSpec::new(
            "echo",
            python.display().to_string(),
            ["-m", "ferry_worker.echo"],
        );
        spec.codec = CodecKind::MsgPack;
        spec.stdio_framing = StdioFraming::LengthPrefixed;
        let mut w = WorkerProcess::spawn(spec).expect("python echo worker starts");
        let info = w.ready_info().unwrap().clone();
        assert_eq!(info.stdio_framing, Some(StdioFraming::LengthPrefixed));
        assert_eq!(info.stdio_codec.as_deref(), Some("msgpack"));
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let reply = w
            .call_with(
                Envelope::request("", "echo", json!({"n": 1})),
                &[&image],
                &CallOptions::default(),
                |_| {},
            )
            .unwrap();
        assert_eq!(reply.data, json!({"n": 1}));
        assert_eq!(reply.attachments, vec![image]);
        w.shutdown().unwrap();
    });
}
