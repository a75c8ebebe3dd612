//! A worker's successful answer, as a caller receives it.

use crate::protocol::Envelope;
use serde_json::Value;

/// A worker's successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The response envelope as received, less its `data`, which is moved (not copied) to
    /// [`data`](Self::data): `envelope.data` is `None`.
    pub envelope: Envelope,
    /// Its `data` (`null` when absent).
    pub data: Value,
    /// Its attachments, in order.
    pub attachments: Vec<Vec<u8>>,
}

impl Response {
    /// The answer of a received response `envelope`: its `data` moved (not cloned: a
    /// large one is not copied a second time) out of it into [`data`](Self::data).
    pub(crate) fn from_envelope(mut envelope: Envelope, attachments: Vec<Vec<u8>>) -> Self {
        Response {
            data: envelope.data.take().unwrap_or(Value::Null),
            envelope,
            attachments,
        }
    }
}

/// A worker's successful answer seen where it was received (see
/// [`Pending::wait_in_place`](super::Pending::wait_in_place)): on shm, inside the ring.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ResponseRef<'a> {
    /// The response envelope as received; its `data` may or may not still be in it: read
    /// [`data`](Self::data).
    pub envelope: &'a Envelope,
    /// Its `data` (`null` when absent).
    pub data: &'a Value,
    /// Its attachments, in order, borrowed.
    pub attachments: &'a [&'a [u8]],
    /// `false` when this is the received frame itself (in the ring on shm, in the
    /// receive buffer elsewhere); `true` when another thread read the answer first and
    /// this is the copy it made.
    pub copied: bool,
}

/// `null`, for answers without `data`.
static NULL: Value = Value::Null;

impl<'a> ResponseRef<'a> {
    /// The view of `envelope` (its `data` in place) and `attachments`.
    pub(crate) fn new(envelope: &'a Envelope, attachments: &'a [&'a [u8]]) -> Self {
        ResponseRef {
            envelope,
            data: envelope.data.as_ref().unwrap_or(&NULL),
            attachments,
            copied: false,
        }
    }

    /// A copy that owns its data and attachments.
    pub fn to_owned(&self) -> Response {
        let mut envelope = self.envelope.clone();
        envelope.data = None;
        Response {
            envelope,
            data: self.data.clone(),
            attachments: self.attachments.iter().map(|a| a.to_vec()).collect(),
        }
    }
}
