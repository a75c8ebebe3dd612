//! The legacy dialect of the old design's stdin/stdout workers.
//!
//! Such a worker is six lines of Python:
//!
//! ```python
//! import json, sys
//! for line in sys.stdin:
//!     req = json.loads(line)
//!     print(json.dumps({"success": True, "request_id": req["request_id"],
//!                       "data": handle(req["data"])}), flush=True)
//! ```
//!
//! It reads `{"type":"<operation>","request_id":"x","data":{...}}` and answers
//! `{"success":true,"request_id":"x","data":{...}}` (or `"success":false` with an
//! `error` that is a string or an object). It sends no `ready` event and no progress.
//! This module translates between that form and [`Envelope`].

use super::{Envelope, ErrorBody, ErrorCode, MessageType};
use serde_json::{json, Map, Value};

/// Why a legacy line could not be read as an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// The line is JSON but not an object.
    #[error("legacy answer is not a JSON object")]
    NotAnObject,
    /// The answer has no boolean `success`.
    #[error("legacy answer lacks a boolean `success`")]
    MissingSuccess,
}

/// The legacy request line for a request envelope.
///
/// ```
/// use ferry::protocol::{legacy, Envelope};
/// let req = Envelope::request("r-1", "inference", serde_json::json!({"prompt": "a"}));
/// let line = legacy::encode_request(&req);
/// assert_eq!(line, serde_json::json!({"type": "inference", "request_id": "r-1", "data": {"prompt": "a"}}));
/// ```
pub fn encode_request(request: &Envelope) -> Value {
    json!({
        "type": request.operation.as_deref().unwrap_or_default(),
        "request_id": request.message_id,
        "data": request.data.clone().unwrap_or_else(|| Value::Object(Map::new())),
    })
}

/// Writes the line [`encode_request`] makes (the same bytes, as `serde_json` writes that
/// object: keys in sorted order) from borrowed parts, without building the object.
pub(crate) fn write_request(
    operation: Option<&str>,
    message_id: &str,
    data: Option<&Value>,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        data: &'a Value,
        request_id: &'a str,
        #[serde(rename = "type")]
        operation: &'a str,
    }
    let empty;
    let data = match data {
        Some(d) => d,
        None => {
            empty = Value::Object(Map::new());
            &empty
        }
    };
    let line = Line {
        data,
        request_id: message_id,
        operation: operation.unwrap_or_default(),
    };
    serde_json::to_writer(out, &line)
}

/// Whether a line that cannot be read whole as a JSON value (data nested past serde_json's
/// limit, a number out of `f64`'s range, a lone surrogate escape) is still a legacy answer:
/// a JSON object with a boolean `success`. Returns the `request_id` it names (`Some(None)`:
/// an answer without a text one, which [`decode_answer`] also reads as none), stepping over
/// every other field without recursion; `None`: not an answer (a stray print).
///
/// ```
/// use ferry::protocol::legacy::marked_answer;
/// let deep = format!(r#"{{"success":true,"data":{}1{}}}"#, "[".repeat(500), "]".repeat(500));
/// assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
/// assert_eq!(marked_answer(deep.as_bytes()), Some(None));
/// assert_eq!(marked_answer(br#"{"success":false,"request_id":"r-3"}"#), Some(Some("r-3".into())));
/// assert_eq!(marked_answer(br#"{"success":true,"request_id":7,"data":1e999}"#), Some(None));
/// assert_eq!(marked_answer(b"loading weights..."), None);
/// ```
pub fn marked_answer(line: &[u8]) -> Option<Option<String>> {
    /// A `request_id` of any type, as [`decode_answer`] takes it: only text names one.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(rename = "success")]
        _success: bool,
        #[serde(default)]
        request_id: Option<Id>,
    }
    serde_json::from_slice::<Marked>(line)
        .ok()
        .map(|m| match m.request_id {
            Some(Id::Text(id)) => Some(id),
            Some(Id::Other(_)) | None => None,
        })
}

/// Reads a legacy answer as a response or error envelope. A missing `request_id` is
/// left unset: with one request outstanding the caller knows which it answers.
pub fn decode_answer(value: Value, message_id: String) -> Result<Envelope, LegacyError> {
    let Value::Object(mut obj) = value else {
        return Err(LegacyError::NotAnObject);
    };
    let success = obj
        .get("success")
        .and_then(Value::as_bool)
        .ok_or(LegacyError::MissingSuccess)?;
    let request_id = obj
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut env = if success {
        let mut e = Envelope::new(MessageType::Response, message_id);
        e.success = Some(true);
        e.data = Some(obj.remove("data").unwrap_or(Value::Null));
        e
    } else {
        let body = match obj.remove("error") {
            Some(Value::String(message)) => ErrorBody::new(ErrorCode::Internal, message),
            Some(Value::Object(err)) => {
                let code = err
                    .get("code")
                    .and_then(Value::as_str)
                    .and_then(ErrorCode::parse)
                    .unwrap_or(ErrorCode::Internal);
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("legacy worker reported an error")
                    .to_owned();
                ErrorBody::new(code, message)
            }
            _ => ErrorBody::new(ErrorCode::Internal, "legacy worker reported failure"),
        };
        let mut e = Envelope::new(MessageType::Error, message_id);
        e.success = Some(false);
        e.error = Some(body);
        e
    };
    env.request_id = request_id;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_requests_are_the_encoded_ones() {
        let mut with_data = Envelope::request("r-1", "inference", json!({"b": 1, "a": [null]}));
        with_data.timestamp = Some("t".into());
        let mut no_data = Envelope::request("r-2", "x", Value::Null);
        no_data.data = None;
        let mut no_op = Envelope::request("r-3", "", json!("\"quoted\"\n"));
        no_op.operation = None;
        for e in [with_data, no_data, no_op] {
            let mut out = Vec::new();
            write_request(
                e.operation.as_deref(),
                &e.message_id,
                e.data.as_ref(),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, serde_json::to_vec(&encode_request(&e)).unwrap());
        }
    }

    #[test]
    fn success_answer_becomes_response() {
        let e = decode_answer(
            json!({"success": true, "request_id": "x", "data": {"a": 1}}),
            "l-1".into(),
        )
        .unwrap();
        assert_eq!(e.kind, MessageType::Response);
        assert_eq!(e.request_id.as_deref(), Some("x"));
        assert_eq!(e.data, Some(json!({"a": 1})));
    }

    #[test]
    fn string_error_becomes_internal_error() {
        let e = decode_answer(json!({"success": false, "error": "boom"}), "l-2".into()).unwrap();
        let body = e.error.unwrap();
        assert_eq!(body.code, ErrorCode::Internal);
        assert_eq!(body.message, "boom");
    }

    #[test]
    fn answer_without_success_is_refused() {
        assert_eq!(
            decode_answer(json!({"data": 1}), "l-3".into()),
            Err(LegacyError::MissingSuccess)
        );
        assert_eq!(
            decode_answer(json!([1]), "l-4".into()),
            Err(LegacyError::NotAnObject)
        );
    }
}
