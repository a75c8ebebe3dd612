//! The compact frame header (docs/protocol.md, section 9) over a MessagePack link whose
//! worker announced `["echo", "device.*", "sleep"]`: any bytes decode to a frame or a typed
//! error, within the common allocation bound; a frame that decodes locates its attachments
//! inside the input, re-encodes, and decodes again to the same envelope.
#![no_main]

use ferry::codec::{CodecKind, CompactWire};
use ferry::protocol::ReadyInfo;
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
    let roomy = CompactWire::new(CodecKind::MsgPack, 1 << 30, &ready);
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
