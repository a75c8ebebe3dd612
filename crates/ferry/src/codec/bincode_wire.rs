//! bincode's wire form of the envelope.
//!
//! bincode is not self-describing: it cannot skip absent fields nor decode a
//! `serde_json::Value`. This mirror struct keeps every field (options included) and
//! carries the free-form JSON parts (`data`, `metrics`, `attachments`) as JSON text.

use super::view::EnvelopeRef;
use super::HeaderError;
use crate::protocol::{Envelope, ErrorBody, ErrorCode, MessageType, Priority};
use serde::{Deserialize, Serialize};

/// What is written: [`Wire`] with borrowed text (bincode writes `&str` and `String` alike).
#[derive(Serialize)]
struct WireRef<'a> {
    version: u32,
    message_id: &'a str,
    request_id: Option<&'a str>,
    timestamp: Option<&'a str>,
    kind: u8,
    operation: Option<&'a str>,
    worker_type: Option<&'a str>,
    source: Option<&'a str>,
    destination: Option<&'a str>,
    priority: Option<u8>,
    deadline_ms: Option<u64>,
    data_json: Option<String>,
    success: Option<bool>,
    error: Option<(&'a str, &'a str, bool)>,
    metrics_json: Option<String>,
    event_name: Option<&'a str>,
    attachments_json: Option<String>,
}

/// What is read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct Wire {
    version: u32,
    message_id: String,
    request_id: Option<String>,
    timestamp: Option<String>,
    kind: u8,
    operation: Option<String>,
    worker_type: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    priority: Option<u8>,
    deadline_ms: Option<u64>,
    data_json: Option<String>,
    success: Option<bool>,
    error: Option<(String, String, bool)>,
    metrics_json: Option<String>,
    event_name: Option<String>,
    attachments_json: Option<String>,
}

fn kind_to_u8(k: MessageType) -> u8 {
    match k {
        MessageType::Request => 0,
        MessageType::Response => 1,
        MessageType::Event => 2,
        MessageType::Error => 3,
        MessageType::Cancel => 4,
    }
}

fn kind_from_u8(k: u8) -> Result<MessageType, HeaderError> {
    Ok(match k {
        0 => MessageType::Request,
        1 => MessageType::Response,
        2 => MessageType::Event,
        3 => MessageType::Error,
        4 => MessageType::Cancel,
        other => return Err(HeaderError::UnknownMessageType(other)),
    })
}

fn priority_from_u8(p: u8) -> Result<Priority, HeaderError> {
    Ok(match p {
        0 => Priority::High,
        1 => Priority::Normal,
        2 => Priority::Low,
        other => return Err(HeaderError::UnknownPriority(other)),
    })
}

/// The wire form of an owned envelope, field by field (the tests' reference for `encode`).
#[cfg(test)]
pub(super) fn reference_wire(e: &Envelope) -> Wire {
    Wire {
        version: e.version,
        message_id: e.message_id.clone(),
        request_id: e.request_id.clone(),
        timestamp: e.timestamp.clone(),
        kind: kind_to_u8(e.kind),
        operation: e.operation.clone(),
        worker_type: e.worker_type.clone(),
        source: e.source.clone(),
        destination: e.destination.clone(),
        priority: e.priority.map(|p| p as u8),
        deadline_ms: e.deadline_ms,
        data_json: e
            .data
            .as_ref()
            .filter(|d| !d.is_null())
            .map(|d| to_json(d).unwrap()),
        success: e.success,
        error: e
            .error
            .as_ref()
            .map(|b| (b.code.as_str().to_owned(), b.message.clone(), b.retryable)),
        metrics_json: e.metrics.as_ref().map(|m| to_json(m).unwrap()),
        event_name: e.event_name.clone(),
        attachments_json: (!e.attachments.is_empty()).then(|| to_json(&e.attachments).unwrap()),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, HeaderError> {
    serde_json::to_string(v).map_err(HeaderError::serde)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, HeaderError> {
    serde_json::from_str(s).map_err(HeaderError::serde)
}

pub(super) fn encode(e: &EnvelopeRef<'_>, out: &mut Vec<u8>) -> Result<(), HeaderError> {
    let wire = WireRef {
        version: e.version,
        message_id: e.message_id,
        request_id: e.request_id,
        timestamp: e.timestamp,
        kind: kind_to_u8(e.kind),
        operation: e.operation,
        worker_type: e.worker_type,
        source: e.source,
        destination: e.destination,
        priority: e.priority.map(|p| p as u8),
        deadline_ms: e.deadline_ms,
        data_json: e.present_data().map(to_json).transpose()?,
        success: e.success,
        error: e
            .error
            .map(|b| (b.code.as_str(), b.message.as_str(), b.retryable)),
        metrics_json: e.metrics.map(to_json).transpose()?,
        event_name: e.event_name,
        attachments_json: (!e.attachments.is_empty())
            .then(|| to_json(&e.attachments))
            .transpose()?,
    };
    bincode::serialize_into(out, &wire).map_err(HeaderError::serde)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Envelope, HeaderError> {
    use bincode::Options as _;
    // Why explicit options: the default `deserialize` trusts length prefixes and can be
    // made to allocate gigabytes; the limit bounds every allocation by the header size.
    let wire: Wire = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(HeaderError::serde)?;
    Ok(Envelope {
        version: wire.version,
        message_id: wire.message_id,
        request_id: wire.request_id,
        timestamp: wire.timestamp,
        kind: kind_from_u8(wire.kind)?,
        operation: wire.operation,
        worker_type: wire.worker_type,
        source: wire.source,
        destination: wire.destination,
        priority: wire.priority.map(priority_from_u8).transpose()?,
        deadline_ms: wire.deadline_ms,
        data: wire.data_json.as_deref().map(from_json).transpose()?,
        success: wire.success,
        error: wire.error.map(|(code, message, retryable)| ErrorBody {
            code: ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal),
            message,
            retryable,
        }),
        metrics: wire.metrics_json.as_deref().map(from_json).transpose()?,
        event_name: wire.event_name,
        attachments: wire
            .attachments_json
            .as_deref()
            .map(from_json)
            .transpose()?
            .unwrap_or_default(),
    })
}
