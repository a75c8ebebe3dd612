//! Binary inputs of a request: `attachments` in a JSON body (base64), or file parts of a
//! `multipart/form-data` body, handed to the worker as protocol attachments.
//!
//! A JSON body's `attachments` is an array; each entry is either a base64 string or an
//! object `{"data": BASE64, "name"?, "content_type"?}` (`data_base64` and `size` are
//! accepted in place of `data`, so an attachment of an answer can be sent back as it
//! came). A multipart body has one part named `request` holding that JSON (with or
//! without its own `attachments`) and any number of file parts, appended in their order
//! after the JSON's attachments; a file part's file name and content type travel with it.
//! The whole body, either way, is bounded by `server.body_limit_bytes` (`413
//! payload_too_large`); bad base64 is `400 invalid_request` naming the entry's index.

use super::error::ApiError;
use super::extract::{reject_json, too_large};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::Engine as _;
use ferry::protocol::{AttachmentMeta, Envelope};
use serde_json::{Map, Value};

/// The field of a JSON body that holds its attachments.
pub(crate) const FIELD: &str = "attachments";

/// The multipart part that holds the request's JSON.
pub(crate) const REQUEST_PART: &str = "request";

/// One binary input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attachment {
    /// A file name, if the client gave one.
    pub name: Option<String>,
    /// A MIME type, if the client gave one.
    pub content_type: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A request's body as JSON (its `attachments` taken out) and its attachments in order.
#[derive(Debug)]
pub(crate) struct WithAttachments {
    /// The JSON body without `attachments`.
    pub body: Value,
    /// The attachments: the JSON's, then multipart file parts.
    pub attachments: Vec<Attachment>,
}

impl WithAttachments {
    /// The body as `T` (a `400 invalid_request` naming what is wrong otherwise).
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        self,
    ) -> Result<(T, Vec<Attachment>), ApiError> {
        let body = serde_json::from_value(self.body)
            .map_err(|e| ApiError::invalid(format!("wrong types: {e}")))?;
        Ok((body, self.attachments))
    }
}

/// Puts `attachments` on `envelope` (their names and types as its attachment metadata) and
/// returns their bytes, as the pool call takes them.
pub(crate) fn attach(envelope: &mut Envelope, attachments: Vec<Attachment>) -> Vec<Vec<u8>> {
    let mut bytes = Vec::with_capacity(attachments.len());
    envelope.attachments = attachments
        .into_iter()
        .map(|a| {
            let meta = AttachmentMeta {
                name: a.name,
                content_type: a.content_type,
                size: a.bytes.len() as u64,
                data_base64: None,
                path: None,
            };
            bytes.push(a.bytes);
            meta
        })
        .collect();
    bytes
}

/// Takes `attachments` out of a JSON object body and decodes it.
pub(crate) fn take_json_attachments(body: &mut Value) -> Result<Vec<Attachment>, ApiError> {
    let Some(object) = body.as_object_mut() else {
        return Ok(Vec::new());
    };
    match object.remove(FIELD) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(entries)) => entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| decode_entry(i, entry))
            .collect(),
        Some(_) => Err(ApiError::invalid(
            "attachments: expected an array of base64 strings or {\"data\": BASE64, \"name\"?, \"content_type\"?} objects",
        )),
    }
}

fn decode_entry(index: usize, entry: Value) -> Result<Attachment, ApiError> {
    let at = |what: String| ApiError::invalid(format!("attachments[{index}]: {what}"));
    let text = |object: &mut Map<String, Value>, key: &str| -> Result<Option<String>, ApiError> {
        match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(at(format!("{key}: expected a string"))),
        }
    };
    let (name, content_type, data, size) = match entry {
        Value::String(data) => (None, None, data, None),
        Value::Object(mut object) => {
            let name = text(&mut object, "name")?;
            let content_type = text(&mut object, "content_type")?;
            let data = match (text(&mut object, "data")?, text(&mut object, "data_base64")?) {
                (Some(d), None) | (None, Some(d)) => d,
                (Some(_), Some(_)) => {
                    return Err(at("give `data` or `data_base64`, not both".into()))
                }
                (None, None) => return Err(at("`data` (base64) is missing".into())),
            };
            let size = match object.remove("size") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| at("size: expected a non-negative integer".into()))?,
                ),
            };
            if let Some(key) = object.keys().next() {
                return Err(at(format!(
                    "`{}` is not a field of an attachment (data, name, content_type, size)",
                    key.escape_debug()
                )));
            }
            (name, content_type, data, size)
        }
        _ => {
            return Err(at(
                "expected a base64 string or an object {\"data\": BASE64, \"name\"?, \"content_type\"?}"
                    .into(),
            ))
        }
    };
    let bytes = decode_base64(&data).map_err(|e| at(format!("not valid base64: {e}")))?;
    if let Some(size) = size {
        if size != bytes.len() as u64 {
            return Err(at(format!(
                "size says {size} bytes, the data has {}",
                bytes.len()
            )));
        }
    }
    Ok(Attachment {
        name,
        content_type,
        bytes,
    })
}

/// Standard base64, padded or not (a `data:...;base64,` URL prefix is accepted too).
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let text = match text.strip_prefix("data:") {
        Some(url) => url.split_once(";base64,").map_or(text, |(_, data)| data),
        None => text,
    };
    let text = text.trim();
    if text.ends_with('=') {
        STANDARD.decode(text)
    } else {
        STANDARD_NO_PAD.decode(text)
    }
}

fn is_multipart(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
        })
}

impl<S: Send + Sync> FromRequest<S> for WithAttachments {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_multipart(&req) {
            let mut body = match axum::Json::<Value>::from_request(req, state).await {
                Ok(axum::Json(v)) => v,
                Err(rejection) => return Err(reject_json(rejection)),
            };
            let attachments = take_json_attachments(&mut body)?;
            return Ok(WithAttachments { body, attachments });
        }
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(reject_multipart)?;
        let mut body = None;
        let mut files = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let part = field.name().map(str::to_owned);
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.map_err(multipart_error)?;
            if part.as_deref() == Some(REQUEST_PART) && file_name.is_none() {
                if body.is_some() {
                    return Err(ApiError::invalid("multipart: more than one `request` part"));
                }
                let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::invalid(format!("multipart part `request`: malformed JSON: {e}"))
                })?;
                body = Some(value);
            } else {
                files.push(Attachment {
                    name: file_name.or(part),
                    content_type,
                    bytes: bytes.to_vec(),
                });
            }
        }
        let Some(mut body) = body else {
            return Err(ApiError::invalid(
                "multipart: a part named `request` with the request's JSON is required",
            ));
        };
        let mut attachments = take_json_attachments(&mut body)?;
        attachments.extend(files);
        Ok(WithAttachments { body, attachments })
    }
}

fn reject_multipart(r: MultipartRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("multipart: {}", r.body_text()),
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    if super::extract::is_body_timeout(&e) {
        return ApiError::from_status(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        );
    }
    ApiError::invalid(format!("multipart: {}", e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_are_strings_or_objects_and_bad_base64_names_its_index() {
        let mut body = json!({"x": 1, "attachments": [
            "aGk=",
            "aGk",
            {"data": "AAE=", "name": "a.png", "content_type": "image/png"},
            {"data_base64": "AAE=", "size": 2},
            "data:image/png;base64,aGk=",
        ]});
        let got = take_json_attachments(&mut body).unwrap();
        assert_eq!(body, json!({"x": 1}));
        assert_eq!(got[0].bytes, b"hi");
        assert_eq!(got[1].bytes, b"hi");
        assert_eq!(got[2].name.as_deref(), Some("a.png"));
        assert_eq!(got[2].content_type.as_deref(), Some("image/png"));
        assert_eq!(got[3].bytes, [0, 1]);
        assert_eq!(got[4].bytes, b"hi");

        for (bad, says) in [
            (
                json!(["aGk=", "not base64!"]),
                "attachments[1]: not valid base64",
            ),
            (
                json!([{"name": "x"}]),
                "attachments[0]: `data` (base64) is missing",
            ),
            (
                json!([{"data": "aGk=", "path": "/etc"}]),
                "attachments[0]: `path` is not a field",
            ),
            (
                json!([{"data": "aGk=", "size": 3}]),
                "attachments[0]: size says 3 bytes",
            ),
            (json!([7]), "attachments[0]: expected a base64 string"),
            (json!("aGk="), "attachments: expected an array"),
        ] {
            let mut body = json!({"attachments": bad});
            let e = take_json_attachments(&mut body).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(e.message().starts_with(says), "{} vs {says}", e.message());
        }
    }

    #[test]
    fn attach_sets_the_metadata_in_order() {
        let mut e = Envelope::request("", "op", Value::Null);
        let bytes = attach(
            &mut e,
            vec![
                Attachment {
                    name: Some("a".into()),
                    content_type: None,
                    bytes: vec![1, 2, 3],
                },
                Attachment {
                    name: None,
                    content_type: Some("image/png".into()),
                    bytes: vec![4],
                },
            ],
        );
        assert_eq!(bytes, [vec![1, 2, 3], vec![4]]);
        assert_eq!(e.attachments.len(), 2);
        assert_eq!(e.attachments[0].name.as_deref(), Some("a"));
        assert_eq!(e.attachments[0].size, 3);
        assert_eq!(e.attachments[1].content_type.as_deref(), Some("image/png"));
    }
}
