//! Codecs: round trips of random envelopes and attachments, and hostile frames.

use ferry::codec::{Codec, CodecError, CodecKind, Framing};
use ferry::protocol::{Envelope, ErrorBody, ErrorCode, MessageType, Metrics, Priority};
use proptest::prelude::*;
use serde_json::{json, Value};

const MAX: usize = 1 << 20;

fn codecs() -> Vec<Codec> {
    let mut v = vec![Codec::new(CodecKind::Json, Framing::Lines, MAX).unwrap()];
    for kind in CodecKind::ALL {
        v.push(Codec::new(kind, Framing::LengthPrefixed, MAX).unwrap());
    }
    v
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 \"\\\\\n\t\u{e9}\u{1F980}]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        0usize..5,
        "[a-z]-[0-9]{1,6}",
        proptest::option::of("[a-z]-[0-9]{1,6}"),
        proptest::option::of(arb_value()),
        proptest::option::of(0u64..100_000),
        proptest::option::of(0usize..3),
        any::<bool>(),
    )
        .prop_map(|(kind, id, req, data, deadline, prio, with_err)| {
            let kinds = [
                MessageType::Request,
                MessageType::Response,
                MessageType::Event,
                MessageType::Error,
                MessageType::Cancel,
            ];
            let mut e = Envelope::new(kinds[kind], id);
            e.request_id = req;
            e.data = data;
            e.deadline_ms = deadline;
            e.priority = prio.map(|p| [Priority::High, Priority::Normal, Priority::Low][p]);
            if with_err {
                e.error = Some(ErrorBody::new(ErrorCode::Overloaded, "queue full"));
                e.metrics = Some(Metrics {
                    processing_time_ms: Some(1.5),
                    ..Metrics::default()
                });
            }
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_codec_round_trips_envelopes_and_attachments(
        env in arb_envelope(),
        attachments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 0..3),
    ) {
        for codec in codecs() {
            let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
            let mut header = Vec::new();
            codec.encode(&env, &parts, &mut header).unwrap();
            let frame = match codec.framing() {
                Framing::Lines => {
                    prop_assert!(!header.contains(&b'\n'), "a line frame must not contain a newline");
                    header.clone()
                }
                _ => [vec![header.clone()], attachments.clone()].concat().concat(),
            };
            let decoded = codec.decode(&frame).unwrap();
            let mut expected = env.clone();
            // `null` and absent data are one thing on the wire.
            expected.data = expected.data.filter(|d| !d.is_null());
            expected.attachments = decoded.envelope.attachments.clone();
            prop_assert_eq!(&decoded.envelope, &expected, "codec {:?}", codec.kind());
            prop_assert_eq!(decoded.attachment_count(), attachments.len());
            for (i, a) in attachments.iter().enumerate() {
                prop_assert_eq!(decoded.attachment(&frame, i).unwrap(), a.as_slice());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_any_codec(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for codec in codecs() {
            let _ = codec.decode(&bytes);
        }
    }
}

#[test]
fn header_length_beyond_the_frame_is_truncated() {
    let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, MAX).unwrap();
    let mut frame = u32::MAX.to_le_bytes().to_vec();
    frame.extend_from_slice(b"abc");
    assert!(matches!(
        codec.decode(&frame),
        Err(CodecError::Truncated(_))
    ));
}

#[test]
fn attachment_sizes_beyond_the_frame_are_truncated() {
    let codec = Codec::new(CodecKind::Json, Framing::LengthPrefixed, MAX).unwrap();
    let mut env = Envelope::request("r-1", "echo", json!({}));
    env.attachments = vec![ferry::protocol::AttachmentMeta {
        size: 1 << 40,
        ..Default::default()
    }];
    let mut header = Vec::new();
    codec.encode(&env, &[b"x"], &mut header).unwrap();
    // Forge the announced size after encoding.
    let forged = String::from_utf8(header[4..].to_vec())
        .unwrap()
        .replace("\"size\":1", "\"size\":1099511627776");
    let mut frame = (forged.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(forged.as_bytes());
    frame.push(b'x');
    assert!(matches!(
        codec.decode(&frame),
        Err(CodecError::Truncated(_))
    ));
}

#[test]
fn bincode_header_announcing_a_huge_string_is_refused_without_allocating_it() {
    let codec = Codec::new(CodecKind::Bincode, Framing::LengthPrefixed, MAX).unwrap();
    // version u32, then a message_id length of 2^60 bytes.
    let mut header = 1u32.to_le_bytes().to_vec();
    header.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let mut frame = (header.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&header);
    assert!(matches!(
        codec.decode(&frame),
        Err(CodecError::Header { .. })
    ));
}

#[test]
fn oversized_frames_are_refused_both_ways() {
    let codec = Codec::new(CodecKind::Json, Framing::LengthPrefixed, 1000).unwrap();
    let env = Envelope::request("r-1", "echo", json!({}));
    let big = vec![0u8; 2000];
    let mut out = Vec::new();
    assert!(matches!(
        codec.encode(&env, &[&big], &mut out),
        Err(CodecError::FrameTooLarge { max: 1000, .. })
    ));
    assert!(matches!(
        codec.decode(&big),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn other_protocol_version_is_refused_by_every_codec() {
    for codec in codecs() {
        let mut env = Envelope::cancel("r-2", "r-1");
        env.version = 7;
        let mut header = Vec::new();
        codec.encode(&env, &[], &mut header).unwrap();
        let err = codec.decode(&header).unwrap_err();
        assert_eq!(err.code(), ErrorCode::VersionMismatch, "{:?}", codec.kind());
    }
}

#[test]
fn inline_attachment_with_wrong_size_is_refused() {
    let codec = Codec::new(CodecKind::Json, Framing::Lines, MAX).unwrap();
    let line = br#"{"version":1,"message_id":"w-1","type":"response","attachments":[{"size":5,"data_base64":"AAAA"}]}"#;
    assert!(matches!(
        codec.decode(line),
        Err(CodecError::Attachment { index: 0, .. })
    ));
}
