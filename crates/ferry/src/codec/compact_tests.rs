//! A compact link delivers what an envelope link delivers (less the fields compact frames
//! drop), its bytes are the ones docs/protocol.md shows, and no input makes it panic or
//! read out of bounds.

use super::*;
use crate::codec::tests::{arb_envelope, arb_value};
use crate::codec::{Codec, Framing};
use proptest::prelude::*;
use serde_json::json;

const MAX: usize = 1 << 24;

fn ready() -> ReadyInfo {
    ReadyInfo::new(
        "echo",
        vec!["echo".into(), "device.*".into(), "sleep".into()],
    )
}

fn wire(kind: CodecKind) -> CompactWire {
    CompactWire::new(kind, MAX, &ready())
}

/// The whole frame a transport would carry: header part, then the raw attachments.
fn frame(wire: &CompactWire, env: &Envelope, attachments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    wire.encode_ref(&EnvelopeRef::from(env), attachments, &mut out)
        .unwrap();
    for a in attachments {
        out.extend_from_slice(a);
    }
    out
}

fn envelope_frame(kind: CodecKind, env: &Envelope, attachments: &[&[u8]]) -> Vec<u8> {
    let codec = Codec::new(kind, Framing::LengthPrefixed, MAX).unwrap();
    let mut out = Vec::new();
    codec.encode(env, attachments, &mut out).unwrap();
    for a in attachments {
        out.extend_from_slice(a);
    }
    out
}

/// What a compact frame carries of `e`: compact frames drop the timestamp, the worker
/// type and the message id of answers and cancels, and read an absent priority as normal.
fn carried(mut e: Envelope) -> Envelope {
    e.timestamp = None;
    e.worker_type = None;
    match e.kind {
        MessageType::Request => e.priority = Some(e.priority.unwrap_or_default()),
        _ => e.message_id = String::new(),
    }
    e
}

/// Envelopes that are often eligible for compact frames: ids of the host's form, and
/// operations from the table, beside the arbitrary ones.
fn arb_hot_envelope() -> impl Strategy<Value = (Envelope, Vec<Vec<u8>>)> {
    (
        arb_envelope(),
        0usize..3,
        any::<u64>(),
        prop_oneof![
            Just("echo"),
            Just("sleep"),
            Just("health"),
            Just("device.x")
        ],
        proptest::option::of(arb_value()),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut e, kind, n, op, data, atts, hot)| {
            if hot {
                e.version = PROTOCOL_VERSION;
                e.kind = [
                    MessageType::Request,
                    MessageType::Response,
                    MessageType::Cancel,
                ][kind];
                e.source = None;
                e.destination = None;
                e.event_name = None;
                e.error = None;
                e.attachments.clear();
                e.data = data;
                e.deadline_ms = e.deadline_ms.map(|d| d % (1 << 32));
                match e.kind {
                    MessageType::Request => {
                        e.message_id = format!("r-{n}");
                        e.operation = Some(op.to_owned());
                        e.request_id = None;
                        e.success = None;
                        e.metrics = None;
                    }
                    _ => {
                        e.request_id = Some(format!("r-{n}"));
                        e.operation = None;
                        e.priority = None;
                        e.deadline_ms = None;
                        e.success = Some(true);
                    }
                }
                if e.kind == MessageType::Cancel {
                    e.data = None;
                    return (e, Vec::new());
                }
            }
            let atts = if e.kind == MessageType::Cancel && hot {
                Vec::new()
            } else {
                atts
            };
            (e, atts)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Against every envelope codec: the compact link decodes what the envelope link
    /// decodes (exactly for envelope frames; the carried fields for compact frames), with
    /// the same attachment bytes.
    #[test]
    fn compact_link_delivers_what_an_envelope_link_delivers(
        (env, atts) in arb_hot_envelope(),
        codec in prop_oneof![Just(CodecKind::MsgPack), Just(CodecKind::Json), Just(CodecKind::Bincode)],
    ) {
        let att_refs: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        let reference = Codec::new(codec, Framing::LengthPrefixed, MAX)
            .unwrap()
            .decode(&envelope_frame(codec, &env, &att_refs));
        let wire = wire(codec);
        let bytes = frame(&wire, &env, &att_refs);
        let got = wire.decode(&bytes);
        match (reference, got) {
            (Ok(want), Ok(got)) => {
                let want_atts: Vec<_> = (0..want.attachment_count())
                    .map(|i| want.attachment(&envelope_frame(codec, &env, &att_refs), i).map(<[u8]>::to_vec))
                    .collect();
                let got_atts: Vec<_> = (0..got.attachment_count())
                    .map(|i| got.attachment(&bytes, i).map(<[u8]>::to_vec))
                    .collect();
                prop_assert_eq!(want_atts, got_atts);
                if bytes[0] == kind::ENVELOPE {
                    prop_assert_eq!(want.envelope, got.envelope);
                } else {
                    let (mut want, mut got) = (carried(want.envelope), carried(got.envelope));
                    // Compact frames carry metrics as f64 bits; serde_json's reader may be
                    // off by an ulp on the envelope side.
                    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                        (Some(a), Some(b)) => (a - b).abs() <= a.abs().max(1.0) * 1e-12,
                        (a, b) => a == b,
                    };
                    let (wm, gm) = (want.metrics.take(), got.metrics.take());
                    prop_assert_eq!(wm.is_some(), gm.is_some());
                    if let (Some(w), Some(g)) = (wm, gm) {
                        prop_assert!(close(w.processing_time_ms, g.processing_time_ms));
                        prop_assert!(close(w.memory_usage_mb, g.memory_usage_mb));
                        prop_assert!(close(w.gpu_utilization, g.gpu_utilization));
                    }
                    prop_assert_eq!(want, got);
                }
            }
            // Whatever the envelope link refuses (a wrong version), the compact link
            // refuses too: such messages are never made compact.
            (Err(_), Err(_)) => {}
            (want, got) => prop_assert!(false, "envelope link: {want:?}, compact link: {got:?}"),
        }
    }

    /// A sender that holds the number of the id the header carries (a host its request's,
    /// a worker the one its request came with) writes the bytes the text alone gives.
    #[test]
    fn encoding_with_the_ids_number_writes_what_the_text_gives(
        (env, atts) in arb_hot_envelope(),
        codec in prop_oneof![Just(CodecKind::MsgPack), Just(CodecKind::Json), Just(CodecKind::Bincode)],
    ) {
        let att_refs: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        let wire = wire(codec);
        let view = EnvelopeRef::from(&env);
        let carried_id = match env.kind {
            MessageType::Request => Some(env.message_id.as_str()),
            _ => env.request_id.as_deref(),
        };
        let number = carried_id.and_then(|id| HOST_IDS.number_of(id));
        let (mut from_text, mut from_number) = (Vec::new(), Vec::new());
        let want = wire.encode_ref(&view, &att_refs, &mut from_text);
        let got = wire.encode_numbered(&view, number, &att_refs, &mut from_number);
        prop_assert_eq!(want.is_ok(), got.is_ok());
        prop_assert_eq!(from_text, from_number);
    }

    /// Decoding frame after frame into one place (as a receiver does, reusing its texts
    /// and lists) gives what a fresh decode of each gives, whatever came before: requests,
    /// answers, envelope frames and refused frames in any order.
    #[test]
    fn decoding_into_a_used_place_equals_a_fresh_decode(
        messages in prop::collection::vec((arb_hot_envelope(), any::<bool>()), 1..8),
        codec in prop_oneof![Just(CodecKind::MsgPack), Just(CodecKind::Json), Just(CodecKind::Bincode)],
    ) {
        let wire = wire(codec);
        let mut place = DecodedFrame::default();
        for ((env, atts), damaged) in messages {
            let att_refs: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
            let mut bytes = frame(&wire, &env, &att_refs);
            if damaged {
                bytes.truncate(bytes.len() / 2);
            }
            match (wire.decode(&bytes), wire.decode_into(&bytes, &mut place)) {
                (Ok(fresh), Ok(())) => {
                    prop_assert_eq!(&fresh.envelope, &place.envelope);
                    prop_assert_eq!(fresh.id_number(), place.id_number());
                    // A compact frame's number is the id its text gives.
                    let text = match place.envelope.kind {
                        MessageType::Request => Some(place.envelope.message_id.clone()),
                        _ => place.envelope.request_id.clone(),
                    };
                    let compact = bytes[0] != kind::ENVELOPE;
                    prop_assert_eq!(place.id_number().map(|n| format!("r-{n}")), text.filter(|_| compact));
                    prop_assert_eq!(fresh.attachment_count(), place.attachment_count());
                    for i in 0..fresh.attachment_count() {
                        prop_assert_eq!(fresh.attachment(&bytes, i), place.attachment(&bytes, i));
                    }
                }
                (Err(fresh), Err(reused)) => prop_assert_eq!(fresh.to_string(), reused.to_string()),
                (fresh, reused) => prop_assert!(false, "fresh: {fresh:?}, reused: {reused:?}"),
            }
        }
    }

    /// Any bytes: a result or a typed error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = wire(CodecKind::MsgPack).decode(&bytes);
        let _ = request_id_of(&bytes);
        let _ = wire(CodecKind::MsgPack).answer_id(&bytes);
        for kind in [CodecKind::Json, CodecKind::MsgPack, CodecKind::Bincode] {
            let _ = Codec::new(kind, Framing::LengthPrefixed, MAX).unwrap().answer_id(&bytes);
        }
        let _ = Codec::new(CodecKind::Json, Framing::Lines, MAX).unwrap().answer_id(&bytes);
    }

    /// A valid compact frame with one byte changed or cut short: a result or a typed
    /// error, and whatever decodes locates its attachments inside the frame.
    #[test]
    fn damaged_frames_never_panic(
        (env, atts) in arb_hot_envelope(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let att_refs: Vec<&[u8]> = atts.iter().map(Vec::as_slice).collect();
        let wire = wire(CodecKind::MsgPack);
        let mut bytes = frame(&wire, &env, &att_refs);
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        let _ = wire.answer_id(&bytes);
        if let Ok(d) = wire.decode(&bytes) {
            for a in 0..d.attachment_count() {
                prop_assert!(d.attachment(&bytes, a).is_some());
            }
        }
    }
}

/// The example of docs/protocol.md: request `r-42`, `echo` (index 0 of the table),
/// deadline 5000 ms, data `"hi"` in MessagePack, one 3-byte attachment.
#[test]
fn request_bytes_are_the_documented_ones() {
    let mut env = Envelope::request("r-42", "echo", json!("hi"));
    env.deadline_ms = Some(5000);
    let bytes = frame(&wire(CodecKind::MsgPack), &env, &[b"abc"]);
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x01, 0x05, 0x00, 0x01,                         // request; data + deadline; normal; 1 attachment
        0x00, 0x00, 0x00, 0x00,                         // operation index 0 (`echo`)
        0x2a, 0, 0, 0, 0, 0, 0, 0,                      // request id 42
        0x88, 0x13, 0x00, 0x00,                         // deadline_ms 5000
        0x03, 0x00, 0x00, 0x00,                         // data: 3 bytes
        0x03, 0x00, 0x00, 0x00,                         // attachment 0: 3 bytes
        0xa2, b'h', b'i',                               // data: MessagePack "hi"
        b'a', b'b', b'c',                               // attachment 0
    ];
    assert_eq!(bytes, want);
}

/// The response example of docs/protocol.md: the answer to `r-42`, data `"hi"`,
/// `processing_time_ms` 0.5, no attachments.
#[test]
fn response_bytes_are_the_documented_ones() {
    let mut env = Envelope::response("w-7", "r-42", json!("hi"));
    env.metrics = Some(Metrics {
        processing_time_ms: Some(0.5),
        ..Metrics::default()
    });
    let bytes = frame(&wire(CodecKind::MsgPack), &env, &[]);
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x02, 0x09, 0x00, 0x00,                         // response; data + processing_time_ms
        0x00, 0x00, 0x00, 0x00,                         // operation: unused
        0x2a, 0, 0, 0, 0, 0, 0, 0,                      // answers request 42
        0x00, 0x00, 0x00, 0x00,                         // deadline: unused
        0x03, 0x00, 0x00, 0x00,                         // data: 3 bytes
        0, 0, 0, 0, 0, 0, 0xe0, 0x3f,                   // processing_time_ms 0.5 (f64 LE)
        0xa2, b'h', b'i',                               // data
    ];
    assert_eq!(bytes, want);
    let decoded = wire(CodecKind::MsgPack).decode(&bytes).unwrap().envelope;
    assert_eq!(decoded.request_id.as_deref(), Some("r-42"));
    assert_eq!(decoded.success, Some(true));
    assert_eq!(decoded.data, Some(json!("hi")));
}

/// An operation not in the table travels by name; a cancel is 24 bytes; an event is an
/// envelope frame behind byte 0.
#[test]
fn names_cancels_and_envelope_frames() {
    let w = wire(CodecKind::MsgPack);
    let bytes = frame(&w, &Envelope::request("r-1", "health", Value::Null), &[]);
    assert_eq!(&bytes[..4], &[0x01, 0x02, 0x00, 0x00]);
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 6);
    assert_eq!(&bytes[24..], b"health");
    assert_eq!(
        w.decode(&bytes).unwrap().envelope.operation.as_deref(),
        Some("health")
    );

    let cancel = frame(&w, &Envelope::cancel("r-2", "r-1"), &[]);
    assert_eq!(cancel.len(), FIXED_LEN);
    assert_eq!(cancel[0], 0x03);

    let mut env = Envelope::new(MessageType::Event, "w-3");
    env.request_id = Some("r-1".into());
    env.event_name = Some("progress".into());
    env.data = Some(json!({"progress": 0.5, "stage": "step"}));
    let bytes = frame(&w, &env, &[b"xy"]);
    assert_eq!(bytes[0], 0x00);
    let decoded = w.decode(&bytes).unwrap();
    assert_eq!(decoded.envelope, env_with_size(env, 2));
    assert_eq!(decoded.attachment(&bytes, 0), Some(&b"xy"[..]));
}

fn env_with_size(mut env: Envelope, size: u64) -> Envelope {
    env.attachments = vec![AttachmentMeta {
        size,
        ..AttachmentMeta::default()
    }];
    env
}

fn err(bytes: &[u8]) -> CodecError {
    wire(CodecKind::MsgPack).decode(bytes).unwrap_err()
}

fn header(kind: u8, flags: u8, count: u8, operation: u32, data_len: u32) -> Vec<u8> {
    let mut b = vec![kind, flags, 0, count];
    b.extend_from_slice(&operation.to_le_bytes());
    b.extend_from_slice(&7u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&data_len.to_le_bytes());
    b
}

#[test]
fn bad_headers_are_typed_errors() {
    // Too short, unknown kind, reserved flags, unknown priority.
    assert!(matches!(err(&[1, 0, 0]), CodecError::Truncated(_)));
    assert!(matches!(err(&[]), CodecError::Truncated(_)));
    assert!(matches!(
        err(&header(9, 0, 0, 0, 0)),
        CodecError::Compact(CompactError::UnknownKind(9))
    ));
    assert!(matches!(
        err(&header(1, 0x40, 0, 0, 0)),
        CodecError::Compact(CompactError::ReservedFlags(0x40))
    ));
    let mut p = header(1, 0, 0, 0, 0);
    p[2] = 3;
    assert!(matches!(
        err(&p),
        CodecError::Compact(CompactError::UnknownPriority(3))
    ));
    // Operation index past the table, or naming a prefix entry.
    assert!(matches!(
        err(&header(1, 0, 0, 3, 0)),
        CodecError::Compact(CompactError::OperationIndex { index: 3, count: 3 })
    ));
    assert!(matches!(
        err(&header(1, 0, 0, u32::MAX, 0)),
        CodecError::Compact(CompactError::OperationIndex { .. })
    ));
    assert!(matches!(
        err(&header(1, 0, 0, 1, 0)),
        CodecError::Compact(CompactError::OperationIsPrefix(1))
    ));
    // A name that is not UTF-8.
    let mut name = header(1, 0x02, 0, 2, 0);
    name.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(
        err(&name),
        CodecError::Compact(CompactError::OperationNotUtf8)
    ));
}

#[test]
fn impossible_lengths_are_refused_before_reading() {
    // Data longer than the frame; attachment sizes that overflow 32 bits when added;
    // a frame longer than its lengths say; attachment sizes cut off.
    let cases: Vec<Vec<u8>> = vec![
        header(1, 0x01, 0, 0, u32::MAX),
        {
            let mut b = header(2, 0, 2, 0, 0);
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            b
        },
        {
            let mut b = header(2, 0, 0, 0, 0);
            b.push(0);
            b
        },
        header(2, 0, 200, 0, 0),
        header(1, 0x02, 0, u32::MAX, 0),
    ];
    for bytes in cases {
        assert!(
            matches!(
                err(&bytes),
                CodecError::Compact(CompactError::Length { .. })
            ),
            "{:?}",
            err(&bytes)
        );
    }
    let too_big = wire(CodecKind::MsgPack);
    let big = vec![0u8; MAX + 1];
    assert!(matches!(
        too_big.decode(&big),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn the_id_of_an_unreadable_request_can_still_be_answered() {
    let bytes = header(1, 0, 0, 99, 0);
    assert_eq!(request_id_of(&bytes).as_deref(), Some("r-7"));
    assert_eq!(request_id_of(&header(2, 0, 0, 0, 0)), None);
    assert_eq!(request_id_of(&bytes[..10]), None);
}

#[test]
fn a_refused_answer_still_names_its_request() {
    let w = wire(CodecKind::MsgPack);
    // A response whose data runs past the frame, and one with reserved flags.
    let short = header(2, 0, 0, 0, 99);
    assert!(w.decode(&short).is_err());
    assert_eq!(w.answer_id(&short).as_deref(), Some("r-7"));
    let flagged = header(2, 0x80, 0, 0, 0);
    assert!(w.decode(&flagged).is_err());
    assert_eq!(w.answer_id(&flagged).as_deref(), Some("r-7"));
    // An envelope frame (an error or event) whose attachment runs past the frame.
    let mut error = envelope_frame(
        CodecKind::MsgPack,
        &Envelope::error(
            "w-1",
            "r-12",
            crate::protocol::ErrorBody::new(crate::protocol::ErrorCode::Internal, "x"),
        ),
        &[b"12345678"],
    );
    error.insert(0, kind::ENVELOPE);
    error.truncate(error.len() - 4);
    assert!(w.decode(&error).is_err());
    assert_eq!(w.answer_id(&error).as_deref(), Some("r-12"));
    // Requests, cancels, unknown kinds and short frames name no answer.
    for frame in [
        header(1, 0, 0, 0, 99),
        header(3, 0x80, 0, 0, 0),
        header(9, 0, 0, 0, 0),
        header(2, 0, 0, 0, 0)[..10].to_vec(),
        Vec::new(),
    ] {
        assert_eq!(w.answer_id(&frame), None, "{frame:?}");
    }
}
