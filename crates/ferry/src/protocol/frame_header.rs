//! Which header a framed link's messages carry: the envelope in the link's codec, or the
//! compact binary header (docs/protocol.md, "Compact frames"), negotiated per link.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The frame header of a framed link (socket, tcp, shm).
///
/// The host offers [`Compact`](FrameHeader::Compact) in `FERRY_FRAME_HEADER`; a worker
/// that speaks it answers `"frame_header": "compact"` in its `ready` event and both sides
/// switch after that event. A worker that says nothing keeps envelope frames.
///
/// ```
/// use ferry::protocol::FrameHeader;
/// assert_eq!("compact".parse::<FrameHeader>().unwrap(), FrameHeader::Compact);
/// assert_eq!(FrameHeader::default(), FrameHeader::Compact);
/// assert!("tiny".parse::<FrameHeader>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FrameHeader {
    /// Every message is an envelope in the link's codec.
    Envelope,
    /// Requests, responses and cancels use the compact header; other messages are
    /// envelope frames behind a marker byte. Offered by default; used only when the worker
    /// accepts.
    #[default]
    Compact,
}

impl FrameHeader {
    /// The name in configuration, `FERRY_FRAME_HEADER` and `ready.frame_header`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameHeader::Envelope => "envelope",
            FrameHeader::Compact => "compact",
        }
    }
}

impl fmt::Display for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown frame header name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown frame header `{0}` (expected envelope or compact)")]
pub struct UnknownFrameHeader(pub String);

impl FromStr for FrameHeader {
    type Err = UnknownFrameHeader;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [FrameHeader::Envelope, FrameHeader::Compact]
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| UnknownFrameHeader(s.to_owned()))
    }
}
