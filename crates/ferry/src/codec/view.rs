//! A borrowed view of an envelope, which is what the codecs actually encode.
//!
//! Encoding from a view lets the hot paths send a message without building an owned
//! [`Envelope`] first (no `String` per id, no clone of `data`), and lets a framed
//! encoding fill in attachment sizes without cloning the envelope. Its serde form is
//! field for field the one of [`Envelope`] (same names, order and omissions), so every
//! codec writes the same bytes from either.

use crate::protocol::{AttachmentMeta, Envelope, ErrorBody, MessageType, Metrics, Priority};
use serde::ser::{Serialize, Serializer};
use serde_json::Value;

/// An envelope by reference. Build one from an [`Envelope`] with `From`, or field by field
/// on a hot path.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub version: u32,
    pub message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: MessageType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "is_absent")]
    pub data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<&'a Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Metas::is_empty")]
    pub attachments: Metas<'a>,
}

fn is_absent(data: &Option<&Value>) -> bool {
    matches!(data, None | Some(Value::Null))
}

impl<'a> EnvelopeRef<'a> {
    /// A view with only the required fields set.
    #[inline]
    pub(crate) fn new(kind: MessageType, message_id: &'a str) -> Self {
        EnvelopeRef {
            version: crate::protocol::PROTOCOL_VERSION,
            message_id,
            request_id: None,
            timestamp: None,
            kind,
            operation: None,
            worker_type: None,
            source: None,
            destination: None,
            priority: None,
            deadline_ms: None,
            data: None,
            success: None,
            error: None,
            metrics: None,
            event_name: None,
            attachments: Metas::AS_IS_NONE,
        }
    }

    /// An owned envelope with the same fields.
    #[cfg(test)]
    pub(crate) fn to_envelope(self) -> Envelope {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Envelope {
            version: self.version,
            message_id: self.message_id.to_owned(),
            request_id: owned(self.request_id),
            timestamp: owned(self.timestamp),
            kind: self.kind,
            operation: owned(self.operation),
            worker_type: owned(self.worker_type),
            source: owned(self.source),
            destination: owned(self.destination),
            priority: self.priority,
            deadline_ms: self.deadline_ms,
            data: self.data.cloned(),
            success: self.success,
            error: self.error.cloned(),
            metrics: self.metrics.cloned(),
            event_name: owned(self.event_name),
            attachments: (0..self.attachments.len())
                .map(|i| {
                    let m = self.attachments.get(i);
                    AttachmentMeta {
                        name: owned(m.name),
                        content_type: owned(m.content_type),
                        size: m.size,
                        data_base64: owned(m.data_base64),
                        path: owned(m.path),
                    }
                })
                .collect(),
        }
    }

    /// `data` when it goes on the wire (`null` and absent are both omitted).
    #[inline]
    pub(crate) fn present_data(&self) -> Option<&'a Value> {
        self.data.filter(|d| !d.is_null())
    }
}

impl<'a> From<&'a Envelope> for EnvelopeRef<'a> {
    #[inline]
    fn from(e: &'a Envelope) -> Self {
        // Destructured so that a field added to `Envelope` cannot be forgotten here.
        let Envelope {
            version,
            message_id,
            request_id,
            timestamp,
            kind,
            operation,
            worker_type,
            source,
            destination,
            priority,
            deadline_ms,
            data,
            success,
            error,
            metrics,
            event_name,
            attachments,
        } = e;
        EnvelopeRef {
            version: *version,
            message_id,
            request_id: request_id.as_deref(),
            timestamp: timestamp.as_deref(),
            kind: *kind,
            operation: operation.as_deref(),
            worker_type: worker_type.as_deref(),
            source: source.as_deref(),
            destination: destination.as_deref(),
            priority: *priority,
            deadline_ms: *deadline_ms,
            data: data.as_ref(),
            success: *success,
            error: error.as_ref(),
            metrics: metrics.as_ref(),
            event_name: event_name.as_deref(),
            attachments: Metas {
                metas: attachments,
                sizes: None,
            },
        }
    }
}

/// The `attachments` field: the metadata as it is, or resized to the attachments that
/// travel raw in a framed body with each `size` set from the bytes (and no `data_base64`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metas<'a> {
    pub metas: &'a [AttachmentMeta],
    /// The raw attachments, when they decide the count and sizes.
    pub sizes: Option<&'a [&'a [u8]]>,
}

impl<'a> Metas<'a> {
    const AS_IS_NONE: Metas<'static> = Metas {
        metas: &[],
        sizes: None,
    };

    /// How many attachments go on the wire.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self.sizes {
            Some(sizes) => sizes.len(),
            None => self.metas.len(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attachment `i` as it goes on the wire (`i < len()`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> MetaRef<'a> {
        let meta = self.metas.get(i);
        let text =
            |f: fn(&'a AttachmentMeta) -> &'a Option<String>| meta.and_then(|m| f(m).as_deref());
        match self.sizes {
            Some(sizes) => MetaRef {
                name: text(|m| &m.name),
                content_type: text(|m| &m.content_type),
                size: sizes[i].len() as u64,
                data_base64: None,
                path: text(|m| &m.path),
            },
            None => MetaRef {
                name: text(|m| &m.name),
                content_type: text(|m| &m.content_type),
                size: meta.map_or(0, |m| m.size),
                data_base64: text(|m| &m.data_base64),
                path: text(|m| &m.path),
            },
        }
    }
}

impl Serialize for Metas<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..self.len()).map(|i| self.get(i)))
    }
}

/// One [`AttachmentMeta`] by reference; the same serde form.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct MetaRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<&'a str>,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
}
