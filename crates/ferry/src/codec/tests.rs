//! The codecs write, byte for byte, what serializing the owned envelope wrote before the
//! borrowed views and the hand-written MessagePack existed; and read it back the same.

use super::*;
use crate::protocol::{AttachmentMeta, ErrorBody, ErrorCode, MessageType, Metrics, Priority};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The envelope as the framed encodings used to send it: metadata resized to the
/// attachments, sizes set, no base64.
fn sized(envelope: &Envelope, attachments: &[&[u8]]) -> Envelope {
    let mut owned = envelope.clone();
    owned
        .attachments
        .resize_with(attachments.len(), AttachmentMeta::default);
    for (meta, bytes) in owned.attachments.iter_mut().zip(attachments) {
        meta.size = bytes.len() as u64;
        meta.data_base64 = None;
    }
    owned
}

/// The framed header as serde wrote it from the owned envelope.
fn reference_header(kind: CodecKind, envelope: &Envelope, attachments: &[&[u8]]) -> Vec<u8> {
    let e = sized(envelope, attachments);
    let mut header = Vec::new();
    match kind {
        CodecKind::Json => serde_json::to_writer(&mut header, &e).unwrap(),
        CodecKind::MsgPack => rmp_serde::encode::write_named(&mut header, &e).unwrap(),
        CodecKind::Bincode => {
            bincode::serialize_into(&mut header, &bincode_wire::reference_wire(&e)).unwrap()
        }
    }
    let mut out = (header.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        "[a-zA-Z0-9 \"\\\\\n\t\u{e9}\u{1F980}]{0,40}",
        "[a-z]{250,300}",
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_meta() -> impl Strategy<Value = AttachmentMeta> {
    (
        proptest::option::of(arb_text()),
        proptest::option::of(arb_text()),
        any::<u64>(),
        proptest::option::of("[A-Za-z0-9+/=]{0,12}"),
        proptest::option::of(arb_text()),
    )
        .prop_map(
            |(name, content_type, size, data_base64, path)| AttachmentMeta {
                name,
                content_type,
                size,
                data_base64,
                path,
            },
        )
}

fn arb_f64() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of(prop_oneof![Just(0.0), -1e9f64..1e9, Just(f64::MAX)])
}

prop_compose! {
    fn arb_envelope()(
        kind in 0usize..5,
        version in prop_oneof![Just(1u32), any::<u32>()],
        message_id in arb_text(),
        texts in prop::collection::vec(proptest::option::of(arb_text()), 7),
        priority in proptest::option::of(0usize..3),
        deadline_ms in proptest::option::of(any::<u64>()),
        data in proptest::option::of(arb_value()),
        success in proptest::option::of(any::<bool>()),
        error in proptest::option::of((0usize..ErrorCode::ALL.len(), arb_text(), any::<bool>())),
        metrics in proptest::option::of((arb_f64(), arb_f64(), arb_f64())),
        attachments in prop::collection::vec(arb_meta(), 0..4),
    ) -> Envelope {
        let kinds = [
            MessageType::Request,
            MessageType::Response,
            MessageType::Event,
            MessageType::Error,
            MessageType::Cancel,
        ];
        let mut e = Envelope::new(kinds[kind], message_id);
        e.version = version;
        let mut texts = texts.into_iter();
        let mut next = || texts.next().flatten();
        e.request_id = next();
        e.timestamp = next();
        e.operation = next();
        e.worker_type = next();
        e.source = next();
        e.destination = next();
        e.event_name = next();
        e.priority = priority.map(|p| [Priority::High, Priority::Normal, Priority::Low][p]);
        e.deadline_ms = deadline_ms;
        e.data = data;
        e.success = success;
        e.error = error.map(|(code, message, retryable)| ErrorBody {
            code: ErrorCode::ALL[code],
            message,
            retryable,
        });
        e.metrics = metrics.map(|(processing_time_ms, memory_usage_mb, gpu_utilization)| Metrics {
            processing_time_ms,
            memory_usage_mb,
            gpu_utilization,
        });
        e.attachments = attachments;
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn framed_headers_are_byte_identical_to_serde_of_the_owned_envelope(
        env in arb_envelope(),
        attachments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
    ) {
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        for kind in CodecKind::ALL {
            let codec = Codec::new(kind, Framing::LengthPrefixed, usize::MAX).unwrap();
            let mut out = Vec::new();
            codec.encode(&env, &parts, &mut out).unwrap();
            prop_assert_eq!(&out, &reference_header(kind, &env, &parts), "{}", kind);
            // From a view, too (what the runtime and the connection send).
            let mut from_ref = Vec::new();
            codec.encode_ref(&EnvelopeRef::from(&env), &parts, &mut from_ref).unwrap();
            prop_assert_eq!(&from_ref, &out, "{} from a view", kind);
        }
    }

    #[test]
    fn line_headers_are_byte_identical_to_serde_of_the_owned_envelope(
        env in arb_envelope(),
        attachments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
    ) {
        use base64::Engine as _;
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        let codec = Codec::new(CodecKind::Json, Framing::Lines, usize::MAX).unwrap();
        let mut out = Vec::new();
        codec.encode(&env, &parts, &mut out).unwrap();
        // Before: without attachments the envelope as it is; with them, resized and sized
        // metadata carrying the bytes in base64.
        let reference = if parts.is_empty() {
            serde_json::to_vec(&env).unwrap()
        } else {
            let mut e = sized(&env, &parts);
            for (meta, bytes) in e.attachments.iter_mut().zip(&parts) {
                meta.data_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            serde_json::to_vec(&e).unwrap()
        };
        prop_assert_eq!(out, reference);
    }

    #[test]
    fn views_serialize_like_the_owned_envelope(env in arb_envelope()) {
        let view = EnvelopeRef::from(&env);
        prop_assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(&env).unwrap()
        );
        let mut a = Vec::new();
        rmp_serde::encode::write_named(&mut a, &view).unwrap();
        let mut b = Vec::new();
        msgpack::encode(&view, &view.attachments, &mut b).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(view.to_envelope(), env);
    }

    #[test]
    fn msgpack_reads_what_rmp_serde_reads(
        env in arb_envelope(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut header = Vec::new();
        rmp_serde::encode::write_named(&mut header, &env).unwrap();
        let expected = format!("{:?}", rmp_serde::from_slice::<Envelope>(&header).unwrap());
        // What ferry writes never needs the slow path.
        let fast = msgpack::decode_fast(&header);
        prop_assert!(fast.is_some());
        prop_assert_eq!(format!("{:?}", fast.unwrap()), expected);
        // Corrupted: the same answer as rmp_serde, whichever path reads it.
        for (at, byte) in flips {
            let i = at.index(header.len());
            header[i] = byte;
        }
        // Compared as `Debug` text: a NaN equals itself there.
        let ours = msgpack::decode(&header).map_err(|e| e.to_string());
        let theirs = rmp_serde::from_slice::<Envelope>(&header).map_err(|e| e.to_string());
        prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    }
}

#[test]
fn line_encoding_is_unchanged() {
    let mut e = Envelope::request("r-1", "echo", json!({"x": "y"}));
    e.attachments = vec![AttachmentMeta {
        size: 3,
        path: Some("/tmp/f".into()),
        ..AttachmentMeta::default()
    }];
    let codec = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap();
    let mut out = Vec::new();
    codec.encode(&e, &[], &mut out).unwrap();
    assert_eq!(out, serde_json::to_vec(&e).unwrap());
    let mut from_ref = Vec::new();
    codec
        .encode_ref(&EnvelopeRef::from(&e), &[], &mut from_ref)
        .unwrap();
    assert_eq!(from_ref, out);
}

#[test]
fn line_attachments_by_path_read_only_regular_files_of_the_announced_size() {
    let codec = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap();
    let line = |path: &str, size: u64| {
        let mut e = Envelope::response("w-1", "r-1", Value::Null);
        e.attachments = vec![AttachmentMeta {
            size,
            path: Some(path.into()),
            ..AttachmentMeta::default()
        }];
        serde_json::to_vec(&e).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, b"abc").unwrap();
    let file = file.to_str().unwrap();
    let frame = line(file, 3);
    let decoded = codec.decode(&frame).unwrap();
    assert_eq!(decoded.attachment(&frame, 0), Some(&b"abc"[..]));
    // A file longer or shorter than announced, a device that never ends, a directory.
    for (path, size) in [(file, 2), (file, 4), ("/dev/zero", 3), ("/", 0)] {
        let err = codec.decode(&line(path, size)).unwrap_err();
        assert!(
            matches!(err, CodecError::Attachment { index: 0, .. }),
            "{path}: {err}"
        );
    }
}
