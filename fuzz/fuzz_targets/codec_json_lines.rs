//! `Codec` JSON over a line link (stdio): the input is one line as read.
#![no_main]

use ferry::codec::{CodecKind, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_fuzz::check_codec(CodecKind::Json, Framing::Lines, data, 0);
});
