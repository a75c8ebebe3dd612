//! The protocol: the contract between the host and a worker, in any language.
//!
//! Every message is an [`Envelope`]. Its field names follow the message format of the
//! system ferry replaces, so a worker written from `docs/protocol.md` alone works. A
//! worker's first message is the [`ready`](ReadyInfo) event; after that the host sends
//! requests and cancels, and the worker answers each request with exactly one response
//! or error, optionally preceded by events (progress).
//!
//! The [`legacy`] module speaks the six-line stdin/stdout dialect of the old design.

mod dialect;
pub mod env;
mod envelope;
mod error_code;
mod event;
mod frame_header;
mod ids;
pub mod legacy;
mod ops;
mod ready;
pub(crate) mod schema;
mod stdio_framing;

pub use dialect::Dialect;
pub use envelope::{
    AttachmentMeta, Envelope, ErrorBody, MessageType, Metrics, Priority, ProtocolError,
};
pub use error_code::ErrorCode;
pub use event::{Event, Progress};
pub use frame_header::{FrameHeader, UnknownFrameHeader};
pub use ids::{now_timestamp, IdGenerator};
pub(crate) use ids::{RequestId, Stamp};
pub use ops::{
    Operation, EVENT_PROGRESS, EVENT_READY, EVENT_STATUS_CHANGE, OP_CAPABILITIES, OP_HEALTH,
    OP_SHUTDOWN,
};
pub use ready::ReadyInfo;
pub use stdio_framing::{StdioFraming, UnknownStdioFraming};

/// The protocol version this build speaks. A peer announcing another version is refused
/// with [`ProtocolError::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The codecs' names on the wire (`FERRY_CODEC`, `ready.codecs`), in the order of
/// preference. The codec layer implements exactly these (a test there checks it).
pub const CODEC_NAMES: [&str; 3] = ["json", "msgpack", "bincode"];
