//! The envelope: one struct for every message type.

use super::schema::{envelope_fields, Field};
use super::{ErrorCode, ReadyInfo, EVENT_READY, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of message an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageType {
    /// Host to worker: run `operation` on `data`.
    Request,
    /// Worker to host: the successful answer to `request_id`.
    Response,
    /// Worker to host: a non-terminal notice (`ready`, `progress`, ...).
    Event,
    /// Worker to host (or host-generated): the failed answer to `request_id`.
    Error,
    /// Host to worker: stop working on `request_id`.
    Cancel,
}

impl MessageType {
    /// The name on the wire (`type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::Request => "request",
            MessageType::Response => "response",
            MessageType::Event => "event",
            MessageType::Error => "error",
            MessageType::Cancel => "cancel",
        }
    }
}

/// Scheduling priority of a request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served when nothing else waits.
    Low,
}

impl Priority {
    /// Every priority, in the protocol's order (high first). The match in
    /// [`as_str`](Self::as_str) is exhaustive here, so a new variant is noticed in this file.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name on the wire (`priority`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// `error` of an error message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code from the closed set.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Whether the same request may succeed if sent again.
    pub retryable: bool,
}

impl ErrorBody {
    /// An error body whose `retryable` follows the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            retryable: code.is_retryable(),
        }
    }
}

/// `metrics` a worker may attach to a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Time the handler took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<f64>,
    /// Resident or device memory in MiB, as the worker measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_mb: Option<f64>,
    /// GPU utilisation, 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
}

/// Describes one binary attachment of a message.
///
/// In framed codecs the bytes follow the envelope raw, in order, `size` bytes each; on
/// stdio (NDJSON) they travel inline as base64 in `data_base64`, or by `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    /// Optional name, e.g. `image_0.png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optional media type, e.g. `image/png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Length of the bytes.
    pub size: u64,
    /// The bytes in base64 (stdio only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// A file holding the bytes instead (stdio only), readable by the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Generates [`Envelope`] from the field list.
macro_rules! define_envelope {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// One protocol message. Optional fields are omitted on the wire when unset.
        ///
        /// ```
        /// use ferry::protocol::{Envelope, MessageType};
        /// let req = Envelope::request("r-1", "inference", serde_json::json!({"prompt": "a fox"}));
        /// assert_eq!(req.kind, MessageType::Request);
        /// let json = serde_json::to_string(&req)?;
        /// assert!(json.contains("\"type\":\"request\""));
        /// let back: Envelope = serde_json::from_str(&json)?;
        /// back.check_version()?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        ///
        /// The fields are generated from the one field list (`envelope_fields!` in
        /// `protocol/schema.rs`), as are the borrowed form and the codecs' field tables.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct Envelope {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $key)]
                $(#[serde($default, skip_serializing_if = "Field::is_unset")])?
                pub $name: $owned,
            )*
        }

        impl Envelope {
            /// Every field unset; the required ones hold placeholders.
            const UNSET: Envelope = Envelope {
                $($name: <$owned as Field>::UNSET,)*
            };

            /// Makes this what [`Envelope::new`]`(kind, "")` makes, in place and field by
            /// field: assigning a whole new envelope copied 352 bytes on a path that runs
            /// for every message received (docs/benchmarks.md, fourteenth round).
            pub(crate) fn reset(&mut self, kind: MessageType) {
                $(self.$name = <$owned as Field>::UNSET;)*
                self.version = PROTOCOL_VERSION;
                self.kind = kind;
            }
        }
    };
}
envelope_fields!(define_envelope);

/// A message that is well-formed but breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: this side speaks {expected}, the peer sent {got}")]
    VersionMismatch {
        /// Our version.
        expected: u32,
        /// Theirs.
        got: u32,
    },
    /// A field the message type requires is absent.
    #[error("{kind:?} message lacks `{field}`")]
    MissingField {
        /// The message type.
        kind: MessageType,
        /// The missing field.
        field: &'static str,
    },
    /// The first message of a worker was not the `ready` event.
    #[error("expected the `ready` event first, got a {0:?} message")]
    NotReady(MessageType),
    /// The `ready` event's data is not a valid ready description.
    #[error("invalid ready event: {0}")]
    InvalidReady(String),
    /// The worker sent a frame the host could not read, and which request it answers could
    /// not be read either: every request in flight on that link fails with this, since the
    /// answer it carried is lost.
    #[error("the worker sent an unreadable frame that names no request ({0})")]
    UnattributableFrame(String),
}

impl ProtocolError {
    /// The error code this maps to on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ProtocolError::MissingField { .. }
            | ProtocolError::NotReady(_)
            | ProtocolError::InvalidReady(_)
            | ProtocolError::UnattributableFrame(_) => ErrorCode::Protocol,
        }
    }
}

impl Envelope {
    /// A bare envelope of the given type; every optional field unset.
    pub fn new(kind: MessageType, message_id: impl Into<String>) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            message_id: message_id.into(),
            kind,
            ..Envelope::UNSET
        }
    }

    /// A request for `operation` with `data`.
    pub fn request(
        message_id: impl Into<String>,
        operation: impl Into<String>,
        data: Value,
    ) -> Self {
        let mut e = Envelope::new(MessageType::Request, message_id);
        e.operation = Some(operation.into());
        e.data = Some(data);
        e
    }

    /// A successful response to `request_id`.
    pub fn response(
        message_id: impl Into<String>,
        request_id: impl Into<String>,
        data: Value,
    ) -> Self {
        let mut e = Envelope::new(MessageType::Response, message_id);
        e.request_id = Some(request_id.into());
        e.success = Some(true);
        e.data = Some(data);
        e
    }

    /// An error answer to `request_id`.
    pub fn error(
        message_id: impl Into<String>,
        request_id: impl Into<String>,
        error: ErrorBody,
    ) -> Self {
        let mut e = Envelope::new(MessageType::Error, message_id);
        e.request_id = Some(request_id.into());
        e.success = Some(false);
        e.error = Some(error);
        e
    }

    /// An event named `event_name` about `request_id` (none for worker-wide events).
    pub fn event(
        message_id: impl Into<String>,
        request_id: Option<String>,
        event_name: impl Into<String>,
        data: Value,
    ) -> Self {
        let mut e = Envelope::new(MessageType::Event, message_id);
        e.request_id = request_id;
        e.event_name = Some(event_name.into());
        e.data = Some(data);
        e
    }

    /// A cancel for `request_id`.
    pub fn cancel(message_id: impl Into<String>, request_id: impl Into<String>) -> Self {
        let mut e = Envelope::new(MessageType::Cancel, message_id);
        e.request_id = Some(request_id.into());
        e
    }

    /// The `ready` handshake event.
    pub fn ready(message_id: impl Into<String>, info: &ReadyInfo) -> Self {
        let data = serde_json::to_value(info).unwrap_or(Value::Null);
        Envelope::event(message_id, None, EVENT_READY, data)
    }

    /// Refuses an envelope of another protocol version.
    pub fn check_version(&self) -> Result<(), ProtocolError> {
        if self.version == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(ProtocolError::VersionMismatch {
                expected: PROTOCOL_VERSION,
                got: self.version,
            })
        }
    }

    /// Whether this is a terminal answer (response or error) to a request.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, MessageType::Response | MessageType::Error)
    }

    /// `request_id`, or a typed error when it is missing.
    pub fn require_request_id(&self) -> Result<&str, ProtocolError> {
        self.request_id
            .as_deref()
            .ok_or(ProtocolError::MissingField {
                kind: self.kind,
                field: "request_id",
            })
    }

    /// `operation`, or a typed error when it is missing.
    pub fn require_operation(&self) -> Result<&str, ProtocolError> {
        self.operation
            .as_deref()
            .ok_or(ProtocolError::MissingField {
                kind: self.kind,
                field: "operation",
            })
    }

    /// Whether this is the `ready` event.
    pub fn is_ready_event(&self) -> bool {
        self.kind == MessageType::Event && self.event_name.as_deref() == Some(EVENT_READY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn design_examples_parse() {
        let lines = [
            r#"{"version":1,"message_id":"r-42","timestamp":"2026-11-22T08:00:00.000Z","type":"request","operation":"inference","worker_type":"sdxl","priority":"normal","deadline_ms":30000,"data":{"prompt":"x"}}"#,
            r#"{"version":1,"message_id":"w-7","request_id":"r-42","type":"event","event_name":"progress","data":{"progress":0.4,"stage":"inference","message":"step 12/30"}}"#,
            r#"{"version":1,"message_id":"w-8","request_id":"r-42","type":"response","success":true,"data":{},"metrics":{"processing_time_ms":812.5,"memory_usage_mb":6120,"gpu_utilization":0.93}}"#,
            r#"{"version":1,"message_id":"w-9","request_id":"r-43","type":"error","success":false,"error":{"code":"invalid_request","message":"data.prompt: required","retryable":false}}"#,
            r#"{"version":1,"message_id":"r-44","request_id":"r-42","type":"cancel"}"#,
        ];
        for line in lines {
            let e: Envelope = serde_json::from_str(line).unwrap();
            e.check_version().unwrap();
        }
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        for kind in [
            MessageType::Request,
            MessageType::Response,
            MessageType::Event,
            MessageType::Error,
            MessageType::Cancel,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        for p in [Priority::High, Priority::Normal, Priority::Low] {
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
    }

    #[test]
    fn unset_fields_are_omitted() {
        let e = Envelope::response("w-1", "r-1", json!({"ok": true}));
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains("error"));
        assert!(!s.contains("attachments"));
    }

    #[test]
    fn other_version_is_a_version_mismatch() {
        let mut e = Envelope::cancel("r-2", "r-1");
        e.version = 2;
        assert_eq!(
            e.check_version(),
            Err(ProtocolError::VersionMismatch {
                expected: 1,
                got: 2
            })
        );
    }
}
