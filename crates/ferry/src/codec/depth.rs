//! The nesting limit of `data`, the same in every codec.
//!
//! Each parser has its own limit on nested arrays and objects: `serde_json` refuses JSON
//! nested deeper than 127 levels counted from the outermost value (so 126 for `data` inside
//! a JSON envelope, 127 for `data` read alone as bincode and the compact header read it),
//! `rmp_serde` 1023. Left to them, `data` one codec accepted could be refused by another
//! when the host passes it on (a MessagePack worker's answer forwarded to a JSON worker,
//! to an HTTP client, into a workflow's next step). So every codec refuses, decoding and
//! encoding alike, `data` nested more than [`MAX_DATA_DEPTH`] levels, well inside all of
//! their own limits: what one accepts, every other reads back.

use super::CodecError;
use serde_json::Value;

/// The most levels of arrays and objects `data` may nest: `[]` and `{}` are one level,
/// `[[1]]` two; a scalar none.
pub const MAX_DATA_DEPTH: usize = 100;

/// The check after decoding with `kind`: none for MessagePack, whose reader (`rmp_serde`
/// held to the limit, `msgpack::read_nested`) refuses deeper data while parsing; the
/// JSON parsers' own limits are higher, so JSON and bincode (`data` as JSON text) are
/// walked.
#[inline]
pub(crate) fn check_decoded(
    kind: super::CodecKind,
    data: Option<&Value>,
    encoded_len: usize,
) -> Result<(), CodecError> {
    match kind {
        super::CodecKind::MsgPack => Ok(()),
        super::CodecKind::Json | super::CodecKind::Bincode => check(data, encoded_len),
    }
}

/// `Err` when `data` nests deeper than [`MAX_DATA_DEPTH`]. `encoded_len` is the length of
/// the frame or header it came in or went into: a value that deep takes at least one byte
/// per level in every codec, so a shorter frame is not looked at.
#[inline]
pub(crate) fn check(data: Option<&Value>, encoded_len: usize) -> Result<(), CodecError> {
    match data {
        Some(v) if encoded_len > MAX_DATA_DEPTH && nests_deeper_than(v, MAX_DATA_DEPTH) => {
            Err(CodecError::DataTooDeep {
                max: MAX_DATA_DEPTH,
            })
        }
        _ => Ok(()),
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// Whether `v` nests more than `max` levels. Walks with a stack of its own (no recursion:
/// a deep value must not exhaust the thread's stack here either) holding each container
/// still to look into with its level.
fn nests_deeper_than(v: &Value, max: usize) -> bool {
    if !is_container(v) {
        return false;
    }
    let mut stack = vec![(v, 1usize)];
    while let Some((v, level)) = stack.pop() {
        if level > max {
            return true;
        }
        let inner = level + 1;
        match v {
            Value::Array(items) => {
                stack.extend(items.iter().filter(|c| is_container(c)).map(|c| (c, inner)));
            }
            Value::Object(map) => {
                stack.extend(map.values().filter(|c| is_container(c)).map(|c| (c, inner)));
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `[[...[leaf]...]]`, `levels` arrays deep.
    fn nested(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| Value::Array(vec![inner]))
    }

    #[test]
    fn depth_counts_arrays_and_objects_not_scalars() {
        assert!(!nests_deeper_than(&json!(1), 0));
        assert!(nests_deeper_than(&json!([]), 0));
        assert!(!nests_deeper_than(&json!([]), 1));
        assert!(!nests_deeper_than(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(nests_deeper_than(&json!({"a": [1, {"b": {}}]}), 3));
        assert!(!nests_deeper_than(&nested(100, json!(1)), 100));
        assert!(nests_deeper_than(&nested(101, json!(1)), 100));
        assert!(nests_deeper_than(&nested(100, json!([])), 100));
        // The deep branch is found beside shallow ones, in maps too.
        let wide = json!({"x": 1, "y": [2, 3], "z": {"deep": nested(100, json!(0))}});
        assert!(nests_deeper_than(&wide, 100));
    }

    #[test]
    fn short_frames_are_not_walked_and_deep_data_is_a_typed_error() {
        let deep = nested(101, json!(1));
        assert!(check(Some(&deep), MAX_DATA_DEPTH).is_ok());
        assert!(matches!(
            check(Some(&deep), 1000),
            Err(CodecError::DataTooDeep {
                max: MAX_DATA_DEPTH
            })
        ));
        assert!(check(Some(&nested(100, json!(1))), 1000).is_ok());
        assert!(check(None, 1000).is_ok());
    }
}
