//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from ferry's own encoders (so the
//! binary seeds are exact) plus hand-written edge cases. Not a fuzz target: a plain binary
//! of the fuzz crate, so `cargo fuzz build` builds it with everything else for free. From
//! the repository root:
//!
//! ```sh
//! cargo +nightly fuzz build --sanitizer none
//! fuzz/target/x86_64-unknown-linux-gnu/release/gen_corpus [DIR]   # DIR: fuzz/corpus
//! ```
//!
//! It rewrites only the files it names (a seed added by hand survives).
//! Input layouts per target are described in each `fuzz_targets/*.rs`.

use ferry::codec::{Codec, CodecKind, Framing};
use ferry::protocol::{
    AttachmentMeta, Envelope, ErrorBody, ErrorCode, Metrics, Priority, ReadyInfo,
};
use serde_json::{json, Value};
use std::fs;
use std::path::PathBuf;

// Linked for the coverage callbacks the instrumented code calls; libFuzzer's own `main`
// stays out (this binary has one).
extern crate libfuzzer_sys;

fn dir(target: &str) -> PathBuf {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned());
    let d = PathBuf::from(root).join(target);
    fs::create_dir_all(&d).unwrap();
    d
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    fs::write(dir(target).join(name), bytes).unwrap();
}

fn with(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

/// A frame (header plus attachments) as `codec` sends it.
fn frame(codec: &Codec, e: &Envelope, attachments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    codec.encode(e, attachments, &mut out).unwrap();
    for a in attachments {
        out.extend_from_slice(a);
    }
    out
}

fn samples() -> Vec<(&'static str, Envelope, Vec<Vec<u8>>)> {
    let mut full = Envelope::request(
        "r-1",
        "inference",
        json!({"prompt": "a fox", "n": [1, -2, 3.5, null, true], "nested": {"a": {}}}),
    );
    full.request_id = Some("q-1".into());
    full.timestamp = Some("2026-01-02T03:04:05.678Z".into());
    full.worker_type = Some("sdxl".into());
    full.source = Some("host".into());
    full.destination = Some("w-0".into());
    full.priority = Some(Priority::High);
    full.deadline_ms = Some(70_000);
    full.attachments = vec![AttachmentMeta {
        name: Some("image_0.png".into()),
        content_type: Some("image/png".into()),
        size: 0,
        data_base64: None,
        path: None,
    }];
    let mut resp = Envelope::response(
        "w-1",
        "r-1",
        json!({"ok": true, "big": 18446744073709551615u64, "neg": -9223372036854775808i64, "f": 1e300}),
    );
    resp.metrics = Some(Metrics {
        processing_time_ms: Some(1.25),
        memory_usage_mb: None,
        gpu_utilization: Some(0.5),
    });
    let err = Envelope::error(
        "w-2",
        "r-1",
        ErrorBody::new(ErrorCode::Timeout, "late \"quoted\"\n"),
    );
    let progress = Envelope::event(
        "w-3",
        Some("r-1".into()),
        "progress",
        json!({"step": 3, "of": 20}),
    );
    let ready = Envelope::ready("w-0", &ReadyInfo::new("echo", vec!["echo".into()]));
    let cancel = Envelope::cancel("h-9", "r-1");
    let mut many = Envelope::response("w-4", "r-2", Value::Null);
    many.attachments = vec![AttachmentMeta::default(); 17];
    vec![
        ("request_full", full, vec![b"\x89PNG\r\n\x1a\n".to_vec()]),
        ("response_metrics", resp, vec![]),
        ("error", err, vec![]),
        ("event_progress", progress, vec![]),
        ("event_ready", ready, vec![]),
        ("cancel", cancel, vec![]),
        (
            "attachments_17",
            many,
            (0..17u8).map(|i| vec![i; usize::from(i % 3)]).collect(),
        ),
    ]
}

fn codecs() {
    let samples = samples();
    let lines = Codec::new(CodecKind::Json, Framing::Lines, usize::MAX).unwrap();
    for (name, e, atts) in &samples {
        let parts: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        put("codec_json_lines", name, &frame(&lines, e, &parts));
    }
    for (name, bytes) in [
        ("bad_base64", &br#"{"version":1,"message_id":"m","type":"response","attachments":[{"size":3,"data_base64":"!!!"}]}"#[..]),
        ("size_mismatch", br#"{"version":1,"message_id":"m","type":"response","attachments":[{"size":9,"data_base64":"AAAA"}]}"#),
        ("no_data_no_path", br#"{"version":1,"message_id":"m","type":"event","attachments":[{"size":0}]}"#),
        ("version_2", br#"{"version":2,"message_id":"m","type":"request"}"#),
        ("unknown_type", br#"{"version":1,"message_id":"m","type":"hello"}"#),
        ("unknown_error_code", br#"{"version":1,"message_id":"m","type":"error","error":{"code":"newer_code","message":"x","retryable":true}}"#),
        ("duplicate_key", br#"{"version":1,"version":1,"message_id":"m","type":"request"}"#),
        ("banner", b"Loading model weights... done"),
        ("not_utf8", b"\xff\xfe{\"version\":1}"),
        ("truncated", br#"{"version":1,"message_id":"m","ty"#),
    ] {
        put("codec_json_lines", name, bytes);
    }

    for (target, kind) in [
        ("codec_json_framed", CodecKind::Json),
        ("codec_msgpack", CodecKind::MsgPack),
        ("codec_bincode", CodecKind::Bincode),
    ] {
        let codec = Codec::new(kind, Framing::LengthPrefixed, usize::MAX).unwrap();
        for (name, e, atts) in &samples {
            let parts: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
            let f = frame(&codec, e, &parts);
            // Mode 0: the frame as received.
            put(target, name, &with(0, &f));
            // Mode 1: the header alone, its prefix made to fit.
            let mut header_only = e.clone();
            header_only.attachments.clear();
            let h = frame(&codec, &header_only, &[]);
            put(target, &format!("{name}_header"), &with(1, &h[4..]));
        }
        let (_, e, atts) = &samples[0];
        let parts: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        let f = frame(&codec, e, &parts);
        put(target, "truncated_attachment", &with(0, &f[..f.len() - 1]));
        put(target, "trailing_byte", &with(0, &[&f[..], b"!"].concat()));
        put(
            target,
            "prefix_too_long",
            &with(0, &[&[0xff, 0xff, 0xff, 0x7f][..], &f[4..]].concat()),
        );
        put(target, "empty", &[0]);
    }

    // Compact frames (the target's input is the frame itself): every sample as a compact
    // link sends it (compact or envelope frame), plus hot-path shapes.
    let ready = ReadyInfo::new(
        "echo",
        vec!["echo".into(), "device.*".into(), "sleep".into()],
    );
    let wire = ferry::codec::CompactWire::new(CodecKind::MsgPack, usize::MAX, &ready);
    let compact = |e: &Envelope, atts: &[&[u8]]| {
        let mut out = Vec::new();
        wire.encode(e, atts, &mut out).unwrap();
        for a in atts {
            out.extend_from_slice(a);
        }
        out
    };
    for (name, e, atts) in &samples {
        let parts: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        put("codec_compact", name, &compact(e, &parts));
    }
    let mut request = Envelope::request("r-42", "echo", json!("hi"));
    request.deadline_ms = Some(5000);
    put(
        "codec_compact",
        "hot_request",
        &compact(&request, &[b"abc"]),
    );
    let mut by_name = Envelope::request("r-7", "health", Value::Null);
    by_name.priority = Some(Priority::High);
    put("codec_compact", "by_name", &compact(&by_name, &[]));
    let mut response = Envelope::response("w-1", "r-42", json!({"ok": true}));
    response.metrics = Some(Metrics {
        processing_time_ms: Some(0.5),
        memory_usage_mb: Some(12.0),
        gpu_utilization: None,
    });
    put(
        "codec_compact",
        "hot_response",
        &compact(&response, &[b"xy", b""]),
    );
    put(
        "codec_compact",
        "cancel",
        &compact(&Envelope::cancel("r-9", "r-42"), &[]),
    );

    // MessagePack shapes the fast reader hands to rmp_serde.
    let (_, e, _) = &samples[1];
    let mut named = Vec::new();
    rmp_serde::encode::write_named(&mut named, e).unwrap();
    put("codec_msgpack", "rmp_named", &with(1, &named));
    let mut positional = Vec::new();
    rmp_serde::encode::write(&mut positional, e).unwrap();
    put("codec_msgpack", "rmp_positional", &with(1, &positional));
    let extra = json!({"version": 1, "message_id": "m", "type": "request", "extra": [1, 2]});
    let mut b = Vec::new();
    rmp_serde::encode::write_named(&mut b, &extra).unwrap();
    put("codec_msgpack", "unknown_key", &with(1, &b));
    let mut nan = Envelope::response("w", "r", Value::Null);
    nan.metrics = Some(Metrics {
        processing_time_ms: Some(f64::NAN),
        memory_usage_mb: Some(f64::INFINITY),
        gpu_utilization: None,
    });
    b.clear();
    rmp_serde::encode::write_named(&mut b, &nan).unwrap();
    put("codec_msgpack", "nan_metrics", &with(1, &b));
}

fn legacy() {
    for (name, v) in [
        (
            "ok",
            json!({"success": true, "request_id": "x", "data": {"a": 1}}),
        ),
        ("ok_no_data", json!({"success": true})),
        ("err_string", json!({"success": false, "error": "boom"})),
        (
            "err_object",
            json!({"success": false, "request_id": "x", "error": {"code": "timeout", "message": "late"}}),
        ),
        (
            "err_unknown_code",
            json!({"success": false, "error": {"code": "weird"}}),
        ),
        ("no_success", json!({"data": 1})),
        ("success_not_bool", json!({"success": "yes"})),
        ("array", json!([1])),
    ] {
        put("legacy_answer", name, v.to_string().as_bytes());
    }
}

fn handshake() {
    let info = ReadyInfo::new("echo", vec!["echo".into()]);
    let ready = Envelope::ready("w-0", &info);
    let mut old = info.clone();
    old.protocol_version = 2;
    let mut json_only = info.clone();
    json_only.codecs = vec!["json".into()];
    for (i, kind) in [
        CodecKind::Json,
        CodecKind::Json,
        CodecKind::MsgPack,
        CodecKind::Bincode,
    ]
    .into_iter()
    .enumerate()
    {
        let framing = if i == 0 {
            Framing::Lines
        } else {
            Framing::LengthPrefixed
        };
        let codec = Codec::new(kind, framing, usize::MAX).unwrap();
        let pick = i as u8;
        let enc = |e: &Envelope| frame(&codec, e, &[]);
        put(
            "ready_handshake",
            &format!("{i}_ready"),
            &with(pick, &enc(&ready)),
        );
        put(
            "ready_handshake",
            &format!("{i}_version_2"),
            &with(pick, &enc(&Envelope::ready("w", &old))),
        );
        put(
            "ready_handshake",
            &format!("{i}_json_only"),
            &with(pick, &enc(&Envelope::ready("w", &json_only))),
        );
        put(
            "ready_handshake",
            &format!("{i}_not_ready"),
            &with(pick, &enc(&Envelope::cancel("w", "r"))),
        );
        let bad = Envelope::event("w", None, "ready", json!({"protocol_version": 1}));
        put(
            "ready_handshake",
            &format!("{i}_bad_data"),
            &with(pick, &enc(&bad)),
        );
    }
    let lines = Codec::new(CodecKind::Json, Framing::Lines, usize::MAX).unwrap();
    let noisy = [
        &b"banner line\n\xff\xfe\n"[..],
        &frame(&lines, &ready, &[]),
        b"\n",
    ]
    .concat();
    put("ready_handshake", "0_noise_then_ready", &with(0, &noisy));
}

fn sdxl() {
    for (name, v) in [
        (
            "flat_valid",
            json!({"model": "/models/sdxl", "prompt": "a fox", "steps": 20, "width": 1024, "height": 1024, "seed": 7}),
        ),
        (
            "nested_valid",
            json!({"model": {"base": "/m"}, "conditioning": {"prompt": "a fox", "loras": [{"path": "/l", "weight": 0.5}]}, "dimensions": {"width": 512, "height": 512}}),
        ),
        (
            "width_70",
            json!({"model": "/models/sdxl", "prompt": "a fox", "width": 70}),
        ),
        ("unknown_key", json!({"prompt": "x", "widht": 512})),
        (
            "conflict",
            json!({"prompt": "x", "steps": 9, "num_inference_steps": 9}),
        ),
        (
            "controlnet_merge",
            json!({"model": "/m", "prompt": "x", "controlnet": {"model": "/c"}, "controlnet_type": "canny", "controlnet_image": 0}),
        ),
        (
            "controlnet_not_object",
            json!({"prompt": "x", "controlnet": "no", "controlnet_type": "canny"}),
        ),
        ("not_object", json!([1, 2])),
    ] {
        put("sdxl_request", name, v.to_string().as_bytes());
    }
}

fn api() {
    for (name, pick, v) in [
        (
            "batch_op",
            0u8,
            json!({"worker_type": "echo", "operation": "echo", "items": [{"a": 1}, null], "parallelism": 2, "priority": "low"}),
        ),
        ("batch_workflow", 0, json!({"workflow": "wf", "items": []})),
        (
            "workflow",
            1,
            json!({"id": "wf", "description": "d", "steps": [
            {"name": "a", "worker_type": "echo", "operation": "echo", "input": {"x": "$request.x", "l": [1.5, "s"]}},
            {"name": "b", "worker_type": "echo", "operation": "echo", "input": "$steps.a.x", "attachments_from": "a", "deadline_ms": 5}]}),
        ),
        (
            "workflow_bad_ref",
            1,
            json!({"id": "wf", "steps": [{"name": "a", "worker_type": "e", "operation": "o", "input": "$steps.zz"}]}),
        ),
        ("control", 2, json!("pause")),
    ] {
        put("api_bodies", name, &with(pick, v.to_string().as_bytes()));
    }
    for (name, pick, v) in [
        (
            "generate",
            0u8,
            json!({"worker_type": "echo", "operation": "echo", "data": {"a": 1}, "priority": "high", "deadline_ms": 100}),
        ),
        (
            "stream",
            1,
            json!({"worker_type": "echo", "operation": "echo"}),
        ),
        (
            "sdxl_validate",
            2,
            json!({"model": "/m", "prompt": "a fox", "width": 70}),
        ),
        (
            "sdxl_generate",
            3,
            json!({"model": "/m", "prompt": "a fox"}),
        ),
        (
            "sdxl_estimate",
            4,
            json!({"model": {"base": "/m"}, "conditioning": {"prompt": "x"}}),
        ),
        (
            "workflow_create",
            5,
            json!({"id": "wf", "steps": [{"name": "a", "worker_type": "e", "operation": "o"}]}),
        ),
        ("workflow_execute", 6, json!({"x": 1})),
        ("session_control", 7, json!({"action": "cancel"})),
        (
            "batch_create",
            8,
            json!({"worker_type": "echo", "operation": "echo", "items": [1]}),
        ),
        ("batch_cancel", 9, json!({"items": [0, 2]})),
        ("no_content_type", 0x80, json!({})),
    ] {
        put("api_http", name, &with(pick, v.to_string().as_bytes()));
    }
    put("api_http", "malformed", b"\x00{\"worker_type\":");
}

fn main() {
    codecs();
    legacy();
    handshake();
    sdxl();
    api();
}
