//! The legacy dialect (`ferry::protocol::legacy`): a legacy worker's answer line, as the
//! connection reads it (`serde_json::from_slice::<Value>` then `decode_answer`), and the
//! request line for an envelope built from the same input.
//!
//! Checks: `decode_answer` refuses exactly non-objects and objects without a boolean
//! `success`, with the typed error; an answer becomes a response (data kept, `null` when
//! absent) or an error (string, object or absent `error` mapped to an `ErrorBody`);
//! `request_id` is the answer's string one; the envelope is valid for every codec. The
//! request line carries the operation, id and data (`{}` when absent).
#![no_main]

use ferry::protocol::legacy::{decode_answer, encode_request, LegacyError};
use ferry::protocol::{Envelope, ErrorCode, MessageType, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let answer = decode_answer(value.clone(), "l-1".to_owned());
    let Value::Object(obj) = &value else {
        assert_eq!(answer, Err(LegacyError::NotAnObject));
        return;
    };
    let Some(success) = obj.get("success").and_then(Value::as_bool) else {
        assert_eq!(answer, Err(LegacyError::MissingSuccess));
        return;
    };
    let e = answer.expect("an object with a boolean success is an answer");
    assert_eq!(e.version, PROTOCOL_VERSION);
    assert_eq!(e.message_id, "l-1");
    assert_eq!(e.success, Some(success));
    assert_eq!(
        e.request_id.as_deref(),
        obj.get("request_id").and_then(Value::as_str)
    );
    if success {
        assert_eq!(e.kind, MessageType::Response);
        assert_eq!(
            e.data.as_ref(),
            Some(obj.get("data").unwrap_or(&Value::Null))
        );
        assert!(e.error.is_none());
    } else {
        assert_eq!(e.kind, MessageType::Error);
        let body = e.error.as_ref().expect("an error answer has a body");
        assert_eq!(body.retryable, body.code.is_retryable());
        match obj.get("error") {
            Some(Value::String(m)) => {
                assert_eq!(body.code, ErrorCode::Internal);
                assert_eq!(&body.message, m);
            }
            Some(Value::Object(err)) => {
                if let Some(m) = err.get("message").and_then(Value::as_str) {
                    assert_eq!(&body.message, m);
                }
                let code = err.get("code").and_then(Value::as_str);
                match code.and_then(ErrorCode::parse) {
                    Some(c) => assert_eq!(body.code, c),
                    None => assert_eq!(body.code, ErrorCode::Internal),
                }
            }
            _ => assert_eq!(body.code, ErrorCode::Internal),
        }
    }
    ferry_fuzz::round_trip_everywhere(&e, &[]);

    // The request line for an envelope made from the same object.
    let op = obj.get("type").and_then(Value::as_str).unwrap_or("op");
    let id = obj
        .get("request_id")
        .and_then(Value::as_str)
        .unwrap_or("r-1");
    let mut req = Envelope::request(id, op, obj.get("data").cloned().unwrap_or(Value::Null));
    if req.data.as_ref().is_some_and(Value::is_null) {
        req.data = None;
    }
    let line = encode_request(&req);
    let expected_data = req.data.clone().unwrap_or_else(|| json!({}));
    assert_eq!(
        line,
        json!({"type": op, "request_id": id, "data": expected_data})
    );
    let text = serde_json::to_vec(&line).unwrap();
    assert!(
        !text.contains(&b'\n'),
        "a legacy request line contains a newline"
    );
});
