//! JSON text for values that carry large strings, byte for byte what `serde_json` writes.
//!
//! `serde_json` looks at a string one byte at a time to find what needs escaping; for a
//! 1 MiB string that is most of a millisecond, more than the whole HTTP round trip of a
//! plain echo server (docs/benchmarks.md, eleventh round, "The JSON answer"). Here long
//! runs are checked 64 bytes at a time (a byte loop the compiler turns into vector compares),
//! the rest eight bytes at a time (a SWAR test on a `u64`), and runs without escapes are
//! copied whole: 0.11-0.47x `serde_json`'s time for strings of 64 B to 1 MiB; 1.04-1.32x
//! for small objects and strings with an escape every 16 bytes (`cargo bench --bench codec
//! -- json_text`). Against the eight-byte-only code, paired: level on small objects, 0.89x
//! with an escape every 16 bytes, 1.1-1.4x with one every 24-64 bytes (docs/benchmarks.md,
//! twelfth round). The output is the same text `serde_json::to_string` gives, which the
//! tests check on random values.

use serde_json::{Number, Value};
use std::fmt::Write as _;

/// Appends `value` as compact JSON text: the same text as `serde_json::to_string(value)`.
///
/// ```
/// let value = serde_json::json!({"b": [1, 2.5, null], "a": "say \"hi\"\n"});
/// let mut out = String::new();
/// ferry::codec::json_text::push_value(&mut out, &value);
/// assert_eq!(out, serde_json::to_string(&value).unwrap());
/// assert_eq!(out, r#"{"a":"say \"hi\"\n","b":[1,2.5,null]}"#);
/// ```
pub fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => push_number(out, n),
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, key);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `n` as `serde_json` writes it: integers through `itoa`, floats through `Number`'s own
/// `Display`, which is `serde_json`'s float text (the tests check both). This assumes
/// `serde_json` without `arbitrary_precision` (off in this workspace): with it, a `Number`
/// keeps its text, and `-0` would come out here as `0`.
fn push_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else {
        // Writing into a `String` cannot fail.
        let _ = write!(out, "{n}");
    }
}

/// Appends `s` as a JSON string, quoted and escaped as `serde_json` does: `\"`, `\\`, the
/// short forms `\b \t \n \f \r`, `\u00XX` (lower-case hex) for the other control
/// characters, everything else as it is.
///
/// ```
/// let mut out = String::new();
/// ferry::codec::json_text::push_str(&mut out, "tab\there \u{1} é");
/// assert_eq!(out, r#""tab\there \u0001 é""#);
/// ```
pub fn push_str(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    // `s[copied..i]` holds no byte to escape and is not yet in `out`.
    let mut copied = 0;
    // Whole clean blocks first: a long string without escapes never reaches the words.
    let mut i = if bytes.len() >= BLOCK {
        skip_clean_blocks(bytes, 0)
    } else {
        0
    };
    // Words without escapes seen in a row since the last escape or block test.
    let mut clean_words = 0;
    while i < bytes.len() {
        // The next eight bytes (or the fewer that are left), looked at one by one only
        // when the word test says one of them needs escaping.
        let end = (i + 8).min(bytes.len());
        if let Some(word) = bytes[i..].first_chunk::<8>() {
            if !any_byte_needs_escape(u64::from_le_bytes(*word)) {
                i = end;
                clean_words += 1;
                // Blocks are tried again only after clean words, so a string with an
                // escape every 8-16 bytes never pays for a block test; at 24-64 bytes apart
                // a try usually fails, and such strings take 1.1-1.4x the word-only time
                // (docs/benchmarks.md, twelfth round).
                if clean_words == BLOCKS_AFTER_CLEAN_WORDS {
                    i = skip_clean_blocks(bytes, i);
                    clean_words = 0;
                }
                continue;
            }
        }
        clean_words = 0;
        for at in i..end {
            let byte = bytes[at];
            if needs_escape(byte) {
                // `at` is at an ASCII byte, so both slices end on character boundaries.
                out.push_str(&s[copied..at]);
                push_escape(out, byte);
                copied = at + 1;
            }
        }
        i = end;
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

/// Bytes [`block_needs_escape`] looks at in one go. At 64 the compiler turns its byte loop
/// into vector compares (SSE2 on x86-64) with one branch per block: about 4x the words'
/// speed on long strings; a 16- or 32-byte block was half as fast (docs/benchmarks.md,
/// twelfth round).
const BLOCK: usize = 64;

/// Clean words in a row after which [`push_str`] tries blocks again.
const BLOCKS_AFTER_CLEAN_WORDS: u32 = 2;

/// Where the run of whole blocks without escapes from `i` ends.
#[inline]
fn skip_clean_blocks(bytes: &[u8], mut i: usize) -> usize {
    while let Some(block) = bytes[i..].first_chunk::<BLOCK>() {
        if block_needs_escape(block) {
            break;
        }
        i += BLOCK;
    }
    i
}

/// Whether any byte of `block` is one [`needs_escape`] picks. Written as a fold over
/// every byte, with no early exit, so that it vectorizes.
#[inline]
fn block_needs_escape(block: &[u8; BLOCK]) -> bool {
    let mut any = 0u8;
    for &byte in block {
        any |= u8::from(byte < 0x20) | u8::from(byte == b'"') | u8::from(byte == b'\\');
    }
    any != 0
}

/// Whether JSON needs `byte` escaped inside a string: one load and one well-predicted
/// branch per byte where three compares mispredicted often (`codec` bench, `escapes_4KiB`).
#[inline]
fn needs_escape(byte: u8) -> bool {
    ESCAPED[usize::from(byte)]
}

/// [`needs_escape`]'s table: control characters, `"` and `\`.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `word` is below `n` (`n` at most 128): "Determine if
/// a word has a byte less than n" from Bit Twiddling Hacks. Exact as a yes/no answer (it
/// may mark the wrong byte, which is not used): a byte below `n` borrows through its own
/// high bit, and bytes with the high bit set are masked out by `!word`.
#[inline]
fn has_byte_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// Whether any byte of `word` equals `byte`.
#[inline]
fn has_byte(word: u64, byte: u8) -> bool {
    has_byte_below(word ^ (ONES * u64::from(byte)), 1)
}

/// Whether any of the eight bytes of `word` is one [`needs_escape`] picks.
#[inline]
fn any_byte_needs_escape(word: u64) -> bool {
    has_byte_below(word, 0x20) || has_byte(word, b'"') || has_byte(word, b'\\')
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        0x08 => out.push_str("\\b"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        0x0c => out.push_str("\\f"),
        b'\r' => out.push_str("\\r"),
        _ => {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(value: &Value) -> String {
        let mut out = String::new();
        push_value(&mut out, value);
        out
    }

    #[test]
    fn the_table_holds_exactly_the_control_characters_the_quote_and_the_backslash() {
        for b in 0..=255u8 {
            assert_eq!(needs_escape(b), b < 0x20 || b == b'"' || b == b'\\', "{b}");
        }
    }

    #[test]
    fn the_word_test_agrees_with_the_byte_test_for_every_byte_in_every_place() {
        for special in 0..=255u8 {
            for place in 0..8 {
                for filler in [b'a', 0x7f, 0x80, 0xff, 0x20, b'!', b'#', b'[', b']'] {
                    let mut bytes = [filler; 8];
                    bytes[place] = special;
                    let want = bytes.iter().any(|&b| needs_escape(b));
                    assert_eq!(
                        any_byte_needs_escape(u64::from_le_bytes(bytes)),
                        want,
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_block_test_agrees_with_the_byte_test_for_every_byte_in_every_place() {
        for special in 0..=255u8 {
            for place in 0..BLOCK {
                for filler in [b'a', 0x7f, 0x80, 0xff, 0x20, b'!', b'#', b'[', b']'] {
                    let mut block = [filler; BLOCK];
                    block[place] = special;
                    let want = block.iter().any(|&b| needs_escape(b));
                    assert_eq!(block_needs_escape(&block), want, "{block:?}");
                }
            }
        }
    }

    #[test]
    fn every_ascii_character_in_every_place_of_a_string_is_written_as_serde_json_writes_it() {
        // Lengths 1..20 cross the eight-byte words at every offset, and the tail after
        // them; the longer ones put the character in a first, second or last block, and in
        // the tail after the blocks.
        let lengths = (1..20).chain([63, 64, 65, 72, 127, 128, 129, 150]);
        for c in (0..0x80u8).map(char::from).chain(['é', '\u{2028}', '😀']) {
            for len in lengths.clone() {
                for place in 0..len {
                    let s: String = (0..len).map(|i| if i == place { c } else { 'x' }).collect();
                    let value = Value::String(s);
                    assert_eq!(text(&value), serde_json::to_string(&value).unwrap());
                }
            }
        }
    }

    #[test]
    fn strings_with_an_escape_every_n_bytes_are_written_as_serde_json_writes_them() {
        // Spacings from every byte to several blocks apart, then a clean run after the
        // escapes stop: block tries that fail, tries that skip, and the tail.
        for gap in 1..400 {
            for tail in [0, 7, 64, 300] {
                let s: String = (0..1200 + tail)
                    .map(|i| match i {
                        i if i >= 1200 => 'y',
                        i if i % gap == gap - 1 => ['"', '\\', '\n', '\u{1}'][(i / gap) % 4],
                        _ => 'x',
                    })
                    .collect();
                let value = Value::String(s);
                assert_eq!(
                    text(&value),
                    serde_json::to_string(&value).unwrap(),
                    "{gap}"
                );
            }
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            // Any characters, control characters and the two to escape among them.
            "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}])*".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_is_written_as_serde_json_writes_it(value in any_value()) {
            prop_assert_eq!(text(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn any_float_is_written_as_serde_json_writes_it(f in any::<f64>()) {
            let value = Value::from(f); // NaN and infinities become null, as in serde_json
            prop_assert_eq!(text(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn long_strings_with_scattered_escapes_are_written_as_serde_json_writes_them(
            s in "[a-z]{0,200}([\\x00-\\x1f\"\\\\é][a-z]{0,150}){0,4}",
        ) {
            let value = Value::String(s);
            prop_assert_eq!(text(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn any_block_is_judged_as_its_bytes_are(block in prop::array::uniform32(any::<u8>()), at in 0..=BLOCK - 32) {
            let mut wide = [b'a'; BLOCK];
            wide[at..at + 32].copy_from_slice(&block);
            let want = wide.iter().any(|&b| needs_escape(b));
            prop_assert_eq!(block_needs_escape(&wide), want);
        }

        #[test]
        fn any_word_is_judged_as_its_bytes_are(word in any::<u64>()) {
            let want = word.to_le_bytes().iter().any(|&b| needs_escape(b));
            prop_assert_eq!(any_byte_needs_escape(word), want);
        }
    }
}
