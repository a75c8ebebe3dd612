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

pub(super) fn arb_value() -> impl Strategy<Value = Value> {
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
    pub(super) fn arb_envelope()(
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
/// An envelope with every field set (unicode, empty text, nested data), and a bare one.
fn golden_envelopes() -> [Envelope; 2] {
    let mut e = Envelope::request(
        "r-1",
        "inference",
        json!({"prompt": "a fox \u{1F98A}", "steps": 30, "scale": 7.5, "tags": ["x", null, true], "neg": -3}),
    );
    e.request_id = Some("q-9".into());
    e.timestamp = Some("2026-11-22T08:00:00.000Z".into());
    e.worker_type = Some("sdxl".into());
    e.source = Some(String::new());
    e.destination = Some("w\u{f6}rker".into());
    e.priority = Some(Priority::High);
    e.deadline_ms = Some(30_000);
    e.success = Some(true);
    e.error = Some(ErrorBody::new(ErrorCode::Timeout, "late"));
    e.metrics = Some(Metrics {
        processing_time_ms: Some(812.5),
        memory_usage_mb: None,
        gpu_utilization: Some(0.5),
    });
    e.event_name = Some("progress".into());
    e.attachments = vec![AttachmentMeta {
        name: Some("a.png".into()),
        content_type: Some("image/png".into()),
        size: 3,
        data_base64: None,
        path: None,
    }];
    [e, Envelope::cancel("r-2", "r-1")]
}

/// Every codec and framing this build speaks.
fn golden_codecs() -> Vec<Codec> {
    let mut codecs = vec![Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap()];
    for kind in CodecKind::ALL {
        codecs.push(Codec::new(kind, Framing::LengthPrefixed, 1 << 20).unwrap());
    }
    codecs
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `golden_envelopes()` encode to with one attachment `[1, 2, 3]`, per envelope,
/// in `golden_codecs()` order, as the codecs wrote them before the field list was
/// generated (recorded from that build). The wire format is fixed: these never change.
const GOLDEN: [[&str; 4]; 2] = [
    [
        // JSON lines, JSON framed, MessagePack, bincode.
        "7b2276657273696f6e223a312c226d6573736167655f6964223a22722d31222c22726571756573745f6964223a22712d39222c2274696d657374616d70223a22323032362d31312d32325430383a30303a30302e3030305a222c2274797065223a2272657175657374222c226f7065726174696f6e223a22696e666572656e6365222c22776f726b65725f74797065223a227364786c222c22736f75726365223a22222c2264657374696e6174696f6e223a2277c3b6726b6572222c227072696f72697479223a2268696768222c22646561646c696e655f6d73223a33303030302c2264617461223a7b226e6567223a2d332c2270726f6d7074223a226120666f7820f09fa68a222c227363616c65223a372e352c227374657073223a33302c2274616773223a5b2278222c6e756c6c2c747275655d7d2c2273756363657373223a747275652c226572726f72223a7b22636f6465223a2274696d656f7574222c226d657373616765223a226c617465222c22726574727961626c65223a747275657d2c226d657472696373223a7b2270726f63657373696e675f74696d655f6d73223a3831322e352c226770755f7574696c697a6174696f6e223a302e357d2c226576656e745f6e616d65223a2270726f6772657373222c226174746163686d656e7473223a5b7b226e616d65223a22612e706e67222c22636f6e74656e745f74797065223a22696d6167652f706e67222c2273697a65223a332c22646174615f626173653634223a2241514944227d5d7d",
        "1e0200007b2276657273696f6e223a312c226d6573736167655f6964223a22722d31222c22726571756573745f6964223a22712d39222c2274696d657374616d70223a22323032362d31312d32325430383a30303a30302e3030305a222c2274797065223a2272657175657374222c226f7065726174696f6e223a22696e666572656e6365222c22776f726b65725f74797065223a227364786c222c22736f75726365223a22222c2264657374696e6174696f6e223a2277c3b6726b6572222c227072696f72697479223a2268696768222c22646561646c696e655f6d73223a33303030302c2264617461223a7b226e6567223a2d332c2270726f6d7074223a226120666f7820f09fa68a222c227363616c65223a372e352c227374657073223a33302c2274616773223a5b2278222c6e756c6c2c747275655d7d2c2273756363657373223a747275652c226572726f72223a7b22636f6465223a2274696d656f7574222c226d657373616765223a226c617465222c22726574727961626c65223a747275657d2c226d657472696373223a7b2270726f63657373696e675f74696d655f6d73223a3831322e352c226770755f7574696c697a6174696f6e223a302e357d2c226576656e745f6e616d65223a2270726f6772657373222c226174746163686d656e7473223a5b7b226e616d65223a22612e706e67222c22636f6e74656e745f74797065223a22696d6167652f706e67222c2273697a65223a337d5d7d",
        "b2010000de0011a776657273696f6e01aa6d6573736167655f6964a3722d31aa726571756573745f6964a3712d39a974696d657374616d70b8323032362d31312d32325430383a30303a30302e3030305aa474797065a772657175657374a96f7065726174696f6ea9696e666572656e6365ab776f726b65725f74797065a47364786ca6736f75726365a0ab64657374696e6174696f6ea777c3b6726b6572a87072696f72697479a468696768ab646561646c696e655f6d73cd7530a46461746185a36e6567fda670726f6d7074aa6120666f7820f09fa68aa57363616c65cb401e000000000000a573746570731ea47461677393a178c0c3a773756363657373c3a56572726f7283a4636f6465a774696d656f7574a76d657373616765a46c617465a9726574727961626c65c3a76d65747269637382b270726f63657373696e675f74696d655f6d73cb4089640000000000af6770755f7574696c697a6174696f6ecb3fe0000000000000aa6576656e745f6e616d65a870726f6772657373ab6174746163686d656e74739183a46e616d65a5612e706e67ac636f6e74656e745f74797065a9696d6167652f706e67a473697a6503",
        "81010000010000000300000000000000722d31010300000000000000712d39011800000000000000323032362d31312d32325430383a30303a30302e3030305a00010900000000000000696e666572656e63650104000000000000007364786c01000000000000000001070000000000000077c3b6726b65720100013075000000000000014e000000000000007b226e6567223a2d332c2270726f6d7074223a226120666f7820f09fa68a222c227363616c65223a372e352c227374657073223a33302c2274616773223a5b2278222c6e756c6c2c747275655d7d010101070000000000000074696d656f757404000000000000006c617465010132000000000000007b2270726f63657373696e675f74696d655f6d73223a3831322e352c226770755f7574696c697a6174696f6e223a302e357d01080000000000000070726f67726573730136000000000000005b7b226e616d65223a22612e706e67222c22636f6e74656e745f74797065223a22696d6167652f706e67222c2273697a65223a337d5d",
    ],
    ["7b2276657273696f6e223a312c226d6573736167655f6964223a22722d32222c22726571756573745f6964223a22722d31222c2274797065223a2263616e63656c222c226174746163686d656e7473223a5b7b2273697a65223a332c22646174615f626173653634223a2241514944227d5d7d", "5e0000007b2276657273696f6e223a312c226d6573736167655f6964223a22722d32222c22726571756573745f6964223a22722d31222c2274797065223a2263616e63656c222c226174746163686d656e7473223a5b7b2273697a65223a337d5d7d", "4800000085a776657273696f6e01aa6d6573736167655f6964a3722d32aa726571756573745f6964a3722d31a474797065a663616e63656cab6174746163686d656e74739181a473697a6503", "3d000000010000000300000000000000722d32010300000000000000722d3100040000000000000000000000010c000000000000005b7b2273697a65223a337d5d"],
];

#[test]
fn every_codec_writes_the_recorded_bytes() {
    let attachment: &[u8] = &[1, 2, 3];
    for (envelope, golden) in golden_envelopes().iter().zip(GOLDEN) {
        for (codec, expected) in golden_codecs().into_iter().zip(golden) {
            let mut out = Vec::new();
            codec.encode(envelope, &[attachment], &mut out).unwrap();
            assert_eq!(
                hex(&out),
                expected,
                "{} {:?}",
                codec.kind(),
                codec.framing()
            );
            let mut from_ref = Vec::new();
            codec
                .encode_ref(&EnvelopeRef::from(envelope), &[attachment], &mut from_ref)
                .unwrap();
            assert_eq!(
                from_ref,
                out,
                "{} {:?} from a view",
                codec.kind(),
                codec.framing()
            );
        }
    }
}

#[test]
fn the_full_golden_envelope_sets_every_field_of_the_list() {
    let [full, _] = golden_envelopes();
    let json = serde_json::to_value(&full).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut listed = crate::protocol::schema::KEYS.to_vec();
    listed.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, listed);
    // And the JSON text has them in list order.
    let text = serde_json::to_string(&full).unwrap();
    let at: Vec<usize> = crate::protocol::schema::KEYS
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
}

/// A float JSON text reads back exactly: serde_json's default float parser (no
/// `float_roundtrip` feature) can be one unit in the last place off for long decimals, so
/// the round-trip test uses values of at most 13 significant digits.
fn arb_exact_f64() -> impl Strategy<Value = f64> {
    (-(1i64 << 40)..(1i64 << 40)).prop_map(|n| n as f64 / 8.0)
}

/// [`arb_value`] with floats that JSON reads back exactly.
fn arb_exact_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        arb_exact_f64().prop_map(|f| json!(f)),
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

/// `envelope` as a receiver decodes it after it was sent with `attachments`: metadata
/// resized and sized to them, no base64 left, `null` data read as absent.
fn as_received(envelope: &Envelope, attachments: &[&[u8]]) -> Envelope {
    let mut e = sized(envelope, attachments);
    if e.data == Some(Value::Null) {
        e.data = None;
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every codec, on every framing it allows, encodes a random envelope (from the owned
    /// form and from the borrowed view) and decodes it back to the same envelope and
    /// attachments; so all of them agree with each other.
    #[test]
    fn every_codec_round_trips_random_envelopes_to_the_same_envelope(
        mut env in arb_envelope(),
        current_version in any::<bool>(),
        data in proptest::option::of(arb_exact_value()),
        metrics in proptest::option::of([
            proptest::option::of(arb_exact_f64()),
            proptest::option::of(arb_exact_f64()),
            proptest::option::of(arb_exact_f64()),
        ]),
        attachments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
    ) {
        if current_version {
            env.version = crate::protocol::PROTOCOL_VERSION;
        }
        env.data = data;
        env.metrics = metrics.map(|[processing_time_ms, memory_usage_mb, gpu_utilization]| {
            Metrics { processing_time_ms, memory_usage_mb, gpu_utilization }
        });
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        // On a line link the metadata must describe the attachments sent (their bytes go
        // inline); framed links resize it themselves. Send the same metadata on both.
        let env = sized(&env, &parts);
        let expected = as_received(&env, &parts);
        let mut codecs = vec![Codec::new(CodecKind::Json, Framing::Lines, usize::MAX).unwrap()];
        codecs.extend(
            CodecKind::ALL.map(|k| Codec::new(k, Framing::LengthPrefixed, usize::MAX).unwrap()),
        );
        for codec in codecs {
            let what = format!("{} {:?}", codec.kind(), codec.framing());
            let mut owned = Vec::new();
            codec.encode(&env, &parts, &mut owned).unwrap();
            let mut borrowed = Vec::new();
            codec.encode_ref(&EnvelopeRef::from(&env), &parts, &mut borrowed).unwrap();
            prop_assert_eq!(&borrowed, &owned, "{}", what);
            // A framed link sends the attachments after the header.
            let mut frame = owned;
            if codec.framing() == Framing::LengthPrefixed {
                frame.extend(parts.concat());
            }
            match codec.decode(&frame) {
                Ok(decoded) => {
                    prop_assert_eq!(env.version, crate::protocol::PROTOCOL_VERSION, "{}", &what);
                    prop_assert_eq!(&decoded.envelope, &expected, "{}", &what);
                    prop_assert_eq!(decoded.attachments_owned(&frame), attachments.clone(), "{}", &what);
                }
                Err(err) => {
                    prop_assert!(
                        env.version != crate::protocol::PROTOCOL_VERSION
                            && matches!(
                                err,
                                CodecError::Protocol(
                                    crate::protocol::ProtocolError::VersionMismatch { .. }
                                )
                            ),
                        "{}: {}", what, err
                    );
                }
            }
        }
    }
}

/// `data` nested to [`MAX_DATA_DEPTH`] travels in every codec; one level more is refused by
/// every encoder and every decoder alike (found by `codec_msgpack`: MessagePack read data
/// 140 levels deep that JSON could not read back; `fuzz/findings/data_depth.patch`).
mod data_depth {
    use super::*;
    use crate::protocol::ReadyInfo;

    /// `levels` arrays around `1`.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| Value::Array(vec![inner]))
    }

    fn too_deep<T: std::fmt::Debug>(r: Result<T, CodecError>) -> bool {
        matches!(
            r,
            Err(CodecError::DataTooDeep {
                max: MAX_DATA_DEPTH
            })
        )
    }

    #[test]
    fn every_codec_carries_data_to_the_limit_and_refuses_one_level_more() {
        let at_limit = Envelope::request("r-1", "echo", nested(MAX_DATA_DEPTH));
        let over = Envelope::request("r-1", "echo", nested(MAX_DATA_DEPTH + 1));
        let mut out = Vec::new();
        for (kind, framing) in [
            (CodecKind::Json, Framing::Lines),
            (CodecKind::Json, Framing::LengthPrefixed),
            (CodecKind::MsgPack, Framing::LengthPrefixed),
            (CodecKind::Bincode, Framing::LengthPrefixed),
        ] {
            let codec = Codec::new(kind, framing, 1 << 20).unwrap();
            codec.encode(&at_limit, &[], &mut out).unwrap();
            let back = codec.decode(&out).unwrap();
            assert_eq!(back.envelope.data, at_limit.data, "{kind:?}/{framing:?}");
            assert!(
                too_deep(codec.encode(&over, &[], &mut out)),
                "{kind:?}/{framing:?}"
            );
        }
        for kind in [CodecKind::MsgPack, CodecKind::Json] {
            let wire = CompactWire::new(kind, 1 << 20, &ReadyInfo::new("t", vec!["echo".into()]));
            wire.encode(&at_limit, &[], &mut out).unwrap();
            assert_eq!(wire.decode(&out).unwrap().envelope.data, at_limit.data);
            assert!(
                too_deep(wire.encode(&over, &[], &mut out)),
                "compact {kind:?}"
            );
        }
    }

    #[test]
    fn frames_written_past_ferrys_encoders_with_deeper_data_are_refused() {
        let over = Envelope::request("r-1", "echo", nested(MAX_DATA_DEPTH + 1));
        let line = serde_json::to_vec(&over).unwrap();
        let lines = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap();
        assert!(too_deep(lines.decode(&line)));
        for kind in [CodecKind::Json, CodecKind::MsgPack] {
            // The whole frame: the length prefix and the serializer's header.
            let frame = reference_header(kind, &over, &[]);
            let codec = Codec::new(kind, Framing::LengthPrefixed, 1 << 20).unwrap();
            let r = codec.decode(&frame).map(|_| ());
            assert!(
                matches!(r, Err(CodecError::DataTooDeep { .. })),
                "{kind:?}: {r:?}"
            );
        }
        // Deeper than every parser's own limit: a typed refusal still, not a stack overflow.
        // (The frame is written by hand: serializing or dropping a `Value` this deep
        // recurses once per level.)
        let frame = msgpack_request_with_data_nested(2000);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        assert!(codec.decode(&frame).is_err());
    }

    #[test]
    fn a_refused_answer_still_names_its_request() {
        let over = Envelope::response("w-1", "r-7", nested(MAX_DATA_DEPTH + 1));
        let lines = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap();
        let line = serde_json::to_vec(&over).unwrap();
        assert!(too_deep(lines.decode(&line)));
        assert_eq!(lines.answer_id(&line).as_deref(), Some("r-7"));
        // Past serde_json's own limit (128): the line does not decode at all, and its id is
        // still read (the data stepped over without recursion), so its request fails
        // instead of waiting. (Written by hand: serializing such a `Value` recurses.)
        let deepest = format!(
            r#"{{"version":1,"type":"response","request_id":"r-7","data":{}1{}}}"#,
            "[".repeat(2000),
            "]".repeat(2000)
        );
        assert!(lines.decode(deepest.as_bytes()).is_err());
        assert_eq!(lines.answer_id(deepest.as_bytes()).as_deref(), Some("r-7"));
        // A JSON log line that mentions a request is not an envelope (no `version`, `type`).
        let log = br#"{"level":"info","request_id":"r-7","msg":"working"}"#;
        assert_eq!(lines.answer_id(log), None);
        let marked = br#"{"version":1,"type":"response","request_id":"r-7","success":"yes"}"#;
        assert!(lines.decode(marked).is_err());
        assert_eq!(lines.answer_id(marked).as_deref(), Some("r-7"));
        for kind in [CodecKind::Json, CodecKind::MsgPack] {
            let codec = Codec::new(kind, Framing::LengthPrefixed, 1 << 20).unwrap();
            let frame = reference_header(kind, &over, &[]);
            assert!(too_deep(codec.decode(&frame)), "{kind:?}");
            assert_eq!(codec.answer_id(&frame).as_deref(), Some("r-7"), "{kind:?}");
        }
        // MessagePack past every parser's limit: the id is read, the arrays stepped over
        // without recursion (it stops at the fast reader's bound, 256 levels).
        let deep = Envelope::response("w-1", "r-8", json!(1));
        let frame = msgpack_frame_with_data_nested(&deep, 2000);
        let msgpack = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        assert!(msgpack.decode(&frame).is_err());
        assert_eq!(msgpack.answer_id(&frame).as_deref(), Some("r-8"));
        // Every codec: an answer whose attachment runs past the frame.
        let answer = Envelope::response("w-1", "r-9", json!({"ok": true}));
        for kind in [CodecKind::Json, CodecKind::MsgPack, CodecKind::Bincode] {
            let codec = Codec::new(kind, Framing::LengthPrefixed, 1 << 20).unwrap();
            let mut frame = Vec::new();
            codec.encode(&answer, &[b"12345678"], &mut frame).unwrap();
            // The header announces 8 bytes; half of them follow (`encode` writes the
            // header, the attachment is the frame's next part).
            frame.extend_from_slice(b"1234");
            assert!(
                matches!(codec.decode(&frame), Err(CodecError::Truncated(_))),
                "{kind:?}"
            );
            assert_eq!(codec.answer_id(&frame).as_deref(), Some("r-9"), "{kind:?}");
            // Nothing readable, or no id: nothing is made up.
            assert_eq!(codec.answer_id(b"\x03\0\0\0\xc1\xc1\xc1"), None, "{kind:?}");
            assert_eq!(codec.answer_id(b"\x03\0"), None, "{kind:?}");
            let mut event = Vec::new();
            codec
                .encode(&Envelope::new(MessageType::Event, "w-2"), &[], &mut event)
                .unwrap();
            assert_eq!(codec.answer_id(&event), None, "{kind:?}");
        }
    }

    /// A MessagePack request frame whose `data` is `levels` one-element arrays around `1`.
    fn msgpack_request_with_data_nested(levels: usize) -> Vec<u8> {
        msgpack_frame_with_data_nested(&Envelope::request("r-1", "echo", json!(1)), levels)
    }

    /// `shallow` (whose `data` is `1`) as a MessagePack frame, its `data` wrapped in
    /// `levels` one-element arrays.
    fn msgpack_frame_with_data_nested(shallow: &Envelope, levels: usize) -> Vec<u8> {
        let mut header = Vec::new();
        rmp_serde::encode::write_named(&mut header, shallow).unwrap();
        // The key `data` (fixstr 0xa4) and its value 1 (0x01): put the arrays before the 1.
        let key = b"\xa4data\x01";
        let at = header
            .windows(key.len())
            .position(|w| w == key)
            .expect("data is 1")
            + key.len()
            - 1;
        header.splice(at..at, std::iter::repeat_n(0x91, levels));
        let mut frame = (header.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&header);
        frame
    }
}
