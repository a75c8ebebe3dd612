//! Codec errors.

use super::CodecKind;
use crate::protocol::{ErrorCode, ProtocolError};

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame (or a size it announces) exceeds the maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The size seen or announced.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The frame ends before the sizes it announces.
    #[error("truncated frame: {0}")]
    Truncated(&'static str),
    /// The header could not be (de)serialized.
    #[error("{codec} header: {source}")]
    Header {
        /// The codec in use.
        codec: CodecKind,
        /// What went wrong.
        source: HeaderError,
    },
    /// A line is not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// An inline attachment is not valid base64 or disagrees with its size.
    #[error("attachment {index}: {source}")]
    Attachment {
        /// Position in `attachments`.
        index: usize,
        /// What is wrong.
        source: AttachmentError,
    },
    /// A binary codec was configured for a line-framed link.
    #[error("codec {0} cannot be used on a line-framed (stdio) link; use json")]
    CodecNotLineSafe(CodecKind),
    /// An unknown codec name.
    #[error("unknown codec `{0}` (expected json, msgpack or bincode)")]
    UnknownCodec(String),
    /// A compact frame breaks its layout.
    #[error("compact frame: {0}")]
    Compact(#[from] super::CompactError),
    /// `data` nests arrays and objects deeper than every codec can read back (see
    /// [`MAX_DATA_DEPTH`](super::MAX_DATA_DEPTH)).
    #[error("data nests arrays and objects more than {max} levels deep")]
    DataTooDeep {
        /// The limit.
        max: usize,
    },
    /// The message decoded but breaks the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl CodecError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            CodecError::Protocol(p) => p.code(),
            CodecError::CodecNotLineSafe(_)
            | CodecError::UnknownCodec(_)
            | CodecError::DataTooDeep { .. } => ErrorCode::InvalidRequest,
            CodecError::Truncated(_)
            | CodecError::Header { .. }
            | CodecError::NotUtf8
            | CodecError::Compact(_)
            | CodecError::Attachment { .. } => ErrorCode::Protocol,
        }
    }
}

/// Why an envelope header could not be serialized or deserialized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The serializer (`serde_json`, `rmp_serde`, `bincode`) refused it; its own error,
    /// whose message is the serializer's.
    #[error(transparent)]
    Serde(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A string longer than the format can carry (4 GiB for MessagePack).
    #[error("string longer than 4 GiB")]
    StringTooLong,
    /// A bincode header with a message type tag that is not one of the five.
    #[error("unknown message type tag {0}")]
    UnknownMessageType(u8),
    /// A bincode header with a priority tag that is not one of the three.
    #[error("unknown priority tag {0}")]
    UnknownPriority(u8),
    /// A MessagePack header nesting arrays and maps deeper than the envelope and its
    /// `data` may (see [`MAX_DATA_DEPTH`](super::MAX_DATA_DEPTH)); reported by the codecs as
    /// [`CodecError::DataTooDeep`].
    #[error("arrays and maps nested too deep")]
    TooDeep,
}

impl CodecError {
    /// `source` from a `codec` header: [`CodecError::Header`], or
    /// [`CodecError::DataTooDeep`] for [`HeaderError::TooDeep`].
    pub(crate) fn header(codec: CodecKind, source: HeaderError) -> Self {
        match source {
            HeaderError::TooDeep => CodecError::DataTooDeep {
                max: super::MAX_DATA_DEPTH,
            },
            source => CodecError::Header { codec, source },
        }
    }
}

impl HeaderError {
    /// A serializer's own error. (A function, not `From`: the serializers' error types
    /// stay out of the public API.)
    pub(crate) fn serde(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        HeaderError::Serde(Box::new(e))
    }
}

/// Why an inline (line-framed) attachment could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// `data_base64` is not valid base64 (the decoder's error).
    #[error(transparent)]
    Base64(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Neither `data_base64` nor `path` is set.
    #[error("neither data_base64 nor path is set")]
    NoData,
    /// The bytes are not as long as `size` says.
    #[error("size says {announced} bytes, data has {actual}")]
    SizeMismatch {
        /// `size`.
        announced: u64,
        /// The bytes there are.
        actual: u64,
    },
    /// The file named by `path` is not as long as `size` says.
    #[error("reading {path}: size says {announced} bytes, the file has {actual}")]
    FileSizeMismatch {
        /// The path.
        path: String,
        /// `size`.
        announced: u64,
        /// The file's length.
        actual: u64,
    },
    /// The file named by `path` is not a regular file (a FIFO or a device would block
    /// the reader or never end).
    #[error("reading {path}: not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// The file named by `path` could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}
