//! `Codec` JSON over a framed link: `u32 LE header length | JSON header | attachments`.
#![no_main]

use ferry::codec::{CodecKind, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(frame) = ferry_fuzz::framed_input(data) {
        ferry_fuzz::check_codec(CodecKind::Json, Framing::LengthPrefixed, &frame, 0);
    }
});
