//! How frames are delimited on a stdio link: NDJSON lines (always, until `ready`), or
//! length-prefixed binary frames after `ready` when the host offered them and the worker
//! accepted (docs/protocol.md, "Binary frames on stdio").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The framing of a stdio link after the worker's `ready` line.
///
/// The host offers [`LengthPrefixed`](StdioFraming::LengthPrefixed) in
/// `FERRY_STDIO_FRAMING` (with the codec for after the switch in `FERRY_STDIO_CODEC`); a
/// worker that speaks it answers `"stdio_framing": "length_prefixed"` and
/// `"stdio_codec": "<codec>"` in its `ready` line and both sides switch right after that
/// line. A worker that says nothing keeps NDJSON lines.
///
/// ```
/// use ferry::protocol::StdioFraming;
/// assert_eq!("length_prefixed".parse::<StdioFraming>().unwrap(), StdioFraming::LengthPrefixed);
/// assert_eq!(StdioFraming::default(), StdioFraming::Lines);
/// assert!("frames".parse::<StdioFraming>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StdioFraming {
    /// One JSON text line per frame, attachments in base64 (the default; every worker).
    #[default]
    Lines,
    /// After `ready`: `u32` little-endian length, then the body in the offered codec with
    /// raw attachments, as on a socket. Used only when the worker accepts.
    LengthPrefixed,
}

impl StdioFraming {
    /// The name in configuration, `FERRY_STDIO_FRAMING` and `ready.stdio_framing`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StdioFraming::Lines => "lines",
            StdioFraming::LengthPrefixed => "length_prefixed",
        }
    }
}

impl fmt::Display for StdioFraming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown stdio framing name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stdio framing `{0}` (expected lines or length_prefixed)")]
pub struct UnknownStdioFraming(pub String);

impl FromStr for StdioFraming {
    type Err = UnknownStdioFraming;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [StdioFraming::Lines, StdioFraming::LengthPrefixed]
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| UnknownStdioFraming(s.to_owned()))
    }
}
