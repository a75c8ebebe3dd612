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
