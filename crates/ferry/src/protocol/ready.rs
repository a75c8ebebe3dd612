//! The `ready` handshake event's data.

use super::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

/// What a worker announces in its `ready` event (and answers to `capabilities`).
///
/// ```
/// use ferry::protocol::ReadyInfo;
/// let info = ReadyInfo::new("echo", vec!["echo".into()]);
/// assert_eq!(info.protocol_version, ferry::protocol::PROTOCOL_VERSION);
/// assert!(info.serves("echo") && info.serves("health"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The protocol version the worker speaks.
    pub protocol_version: u32,
    /// The worker's type, e.g. `sdxl`.
    pub worker_type: String,
    /// The worker's process id.
    pub pid: u32,
    /// Operations the worker's handler serves (built-ins are implied).
    pub operations: Vec<String>,
    /// Codecs the worker can speak (`json`, `msgpack`, `bincode`).
    pub codecs: Vec<String>,
    /// The frame header the worker switches to after this event: `compact` only when the
    /// host offered it (`FERRY_FRAME_HEADER`); absent means envelope frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_header: Option<super::FrameHeader>,
    /// stdio only: the framing the worker switches to right after this line,
    /// `length_prefixed` only when the host offered it (`FERRY_STDIO_FRAMING`); absent
    /// means NDJSON lines throughout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio_framing: Option<super::StdioFraming>,
    /// stdio only, with `stdio_framing`: the codec of the frames after the switch; must be
    /// the one the host offered in `FERRY_STDIO_CODEC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio_codec: Option<String>,
    /// Free-form implementation name and version, e.g. `ferry-rust/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl ReadyInfo {
    /// A description for this process, speaking every codec this build has.
    pub fn new(worker_type: impl Into<String>, operations: Vec<String>) -> Self {
        ReadyInfo {
            protocol_version: PROTOCOL_VERSION,
            worker_type: worker_type.into(),
            pid: std::process::id(),
            operations,
            codecs: super::CODEC_NAMES.iter().map(|c| (*c).to_owned()).collect(),
            frame_header: None,
            stdio_framing: None,
            stdio_codec: None,
            runtime: Some(concat!("ferry-rust/", env!("CARGO_PKG_VERSION")).to_owned()),
        }
    }

    /// Whether the worker serves `operation` (built-ins always).
    pub fn serves(&self, operation: &str) -> bool {
        matches!(
            super::Operation::classify(operation),
            super::Operation::Health | super::Operation::Capabilities | super::Operation::Shutdown
        ) || self.operations.iter().any(|o| o == operation)
    }
}
