//! `Codec` MessagePack over a framed link, both readers: the hand-written fast reader and
//! the `rmp_serde` fallback it hands unusual headers to. Besides the common codec checks,
//! a differential one: whatever the fast reader decides must be what `rmp_serde` decides
//! on the same header (the module's documented contract), and it allocates no more than
//! the larger of the common bound and what `rmp_serde` alone allocates on that header.
//! (One documented difference: `data` nested deeper than `MAX_DATA_DEPTH`, which
//! `rmp_serde` reads and every ferry codec refuses.)
#![no_main]

use ferry::codec::{CodecError, CodecKind, Framing};
use ferry::protocol::{Envelope, ProtocolError};
use ferry_fuzz::{canon, framed_input, header_of, measure, roomy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(frame) = framed_input(data) else {
        return;
    };
    let Some(header) = header_of(&frame) else {
        ferry_fuzz::check_codec(CodecKind::MsgPack, Framing::LengthPrefixed, &frame, 0);
        return;
    };
    // rmp_serde alone may preallocate up to 1 MiB for an announced sequence (serde's
    // `size_hint::cautious`); the decoder may allocate that much too, but not more.
    let (reference, usage) = measure(|| rmp_serde::from_slice::<Envelope>(header));
    ferry_fuzz::check_codec(
        CodecKind::MsgPack,
        Framing::LengthPrefixed,
        &frame,
        usage.largest,
    );
    let ours = roomy(CodecKind::MsgPack, Framing::LengthPrefixed).decode(&frame);
    match (&ours, &reference) {
        (Ok(d), Ok(r)) => assert_eq!(canon(&d.envelope), canon(r), "fast reader vs rmp_serde"),
        (Ok(d), Err(e)) => panic!("accepted what rmp_serde refuses ({e}): {:#?}", d.envelope),
        (Err(CodecError::Header { source, .. }), Ok(r)) => {
            panic!("refused ({source}) what rmp_serde reads: {r:#?}")
        }
        (Err(CodecError::Protocol(ProtocolError::VersionMismatch { got, .. })), Ok(r)) => {
            assert_eq!(*got, r.version)
        }
        // rmp_serde reads up to 1023 levels; ferry refuses a header nesting deeper than
        // the envelope's map and `max` levels below it (in `data`, or in a field the
        // envelope does not keep), so that what one codec accepts, all read back. The
        // refusal must be for that alone: rmp_serde held to the same depth refuses it for
        // depth too.
        (Err(CodecError::DataTooDeep { max }), Ok(_)) => {
            let mut de = rmp_serde::Deserializer::from_read_ref(header);
            de.set_max_depth(max + 2);
            let held = <Envelope as serde::Deserialize>::deserialize(&mut de);
            assert!(
                matches!(held, Err(rmp_serde::decode::Error::DepthLimitExceeded)),
                "refused as deeper than {max} levels, but rmp_serde at that depth says {held:?}"
            );
        }
        (Err(CodecError::Truncated(_)), Ok(_)) | (Err(_), Err(_)) => {}
        (Err(e), Ok(r)) => panic!("unexpected refusal {e:?} of {r:#?}"),
    }
});
