//! The compact frame header (docs/protocol.md, section 9) over a MessagePack link whose
//! worker announced `["echo", "device.*", "sleep"]`: any bytes decode to a frame or a typed
//! error, within the common allocation bound; a frame that decodes locates its attachments
//! inside the input, re-encodes, and decodes again to the same envelope; decoding into a
//! place that held another frame gives what a fresh decode gives.
#![no_main]

use ferry::codec::{CodecKind, CompactWire, DecodedFrame};
use ferry::protocol::{Envelope, ReadyInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ready = ReadyInfo::new(
        "echo",
        vec!["echo".into(), "device.*".into(), "sleep".into()],
    );
    let wire = CompactWire::new(CodecKind::MsgPack, data.len().max(1), &ready);
    // An envelope frame (byte 0) is the MessagePack codec's: rmp_serde alone may
    // preallocate up to 1 MiB for an announced sequence there (see codec_msgpack), so the
    // decoder may too, but not more. Compact frames get the common bound alone.
    let also = match data.split_first() {
        Some((0, body)) => ferry_fuzz::header_of(body).map_or(0, |header| {
            ferry_fuzz::measure(|| rmp_serde::from_slice::<ferry::protocol::Envelope>(header))
                .1
                .largest
        }),
        _ => 0,
    };
    let (r, usage) = ferry_fuzz::measure(|| wire.decode(data));
    ferry_fuzz::assert_bounded("compact decode", data.len(), usage, also);
    let roomy = CompactWire::new(CodecKind::MsgPack, 1 << 30, &ready);
    // Decoding into a place that held another frame (as both ends of a link do) gives
    // what a fresh decode gives, refusals included.
    let mut place = DecodedFrame::default();
    let primer = Envelope::request("r-5", "sleep", serde_json::json!({"ms": 1}));
    let mut header = Vec::new();
    roomy
        .encode(&primer, &[b"primer"], &mut header)
        .expect("the primer encodes");
    header.extend_from_slice(b"primer");
    roomy
        .decode_into(&header, &mut place)
        .expect("the primer decodes");
    match (&r, wire.decode_into(data, &mut place)) {
        (Ok(fresh), Ok(())) => {
            assert_eq!(
                ferry_fuzz::canon(&fresh.envelope),
                ferry_fuzz::canon(&place.envelope)
            );
            assert_eq!(fresh.attachment_count(), place.attachment_count());
            for i in 0..fresh.attachment_count() {
                assert_eq!(fresh.attachment(data, i), place.attachment(data, i));
            }
        }
        (Err(fresh), Err(reused)) => assert_eq!(fresh.to_string(), reused.to_string()),
        (fresh, reused) => panic!("fresh decode {fresh:?}, into a used place {reused:?}"),
    }
    let Ok(decoded) = r else {
        if let Err(e) = r {
            let _ = (e.code(), e.to_string());
            let (_, usage) = ferry_fuzz::measure(|| wire.answer_id(data));
            ferry_fuzz::assert_bounded("compact answer_id", data.len(), usage, also);
        }
        return;
    };
    let attachments: Vec<Vec<u8>> = (0..decoded.attachment_count())
        .map(|i| {
            decoded
                .attachment(data, i)
                .expect("a decoded attachment lies inside the frame")
                .to_vec()
        })
        .collect();
    let refs: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    roomy
        .encode(&decoded.envelope, &refs, &mut out)
        .expect("what decoded re-encodes");
    for a in &refs {
        out.extend_from_slice(a);
    }
    let again = roomy.decode(&out).expect("the re-encoding decodes");
    // A compact frame drops the timestamp and worker type; an envelope frame that fits
    // the layout comes back compact, so compare what compact frames carry.
    let carried = |mut e: ferry::protocol::Envelope| {
        e.timestamp = None;
        e.worker_type = None;
        if e.kind != ferry::protocol::MessageType::Request {
            e.message_id = String::new();
        } else {
            e.priority = Some(e.priority.unwrap_or_default());
        }
        e
    };
    // Compared as text: a NaN metric equals itself there.
    assert_eq!(
        ferry_fuzz::canon(&carried(decoded.envelope)),
        ferry_fuzz::canon(&carried(again.envelope)),
        "round trip"
    );
});
