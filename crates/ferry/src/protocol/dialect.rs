//! The two message formats a worker may speak.

use serde::{Deserialize, Serialize};

/// Which message format the worker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dialect {
    /// The ferry protocol: `ready` handshake, envelopes, events, cancel.
    #[default]
    Ferry,
    /// The old design's six-line stdin/stdout worker (see [`legacy`](super::legacy));
    /// stdio and JSON only, no handshake, one request at a time.
    Legacy,
}
