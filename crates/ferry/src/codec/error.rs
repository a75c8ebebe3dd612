//! Codec errors.

use super::CodecKind;
use crate::protocol::{ErrorCode, ProtocolError};

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
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
    #[error("{codec} header: {message}")]
    Header {
        /// The codec in use.
        codec: CodecKind,
        /// The serializer's message.
        message: String,
    },
    /// A line is not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// An inline attachment is not valid base64 or disagrees with its size.
    #[error("attachment {index}: {message}")]
    Attachment {
        /// Position in `attachments`.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A binary codec was configured for a line-framed link.
    #[error("codec {0} cannot be used on a line-framed (stdio) link; use json")]
    CodecNotLineSafe(CodecKind),
    /// An unknown codec name.
    #[error("unknown codec `{0}` (expected json, msgpack or bincode)")]
    UnknownCodec(String),
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
            CodecError::CodecNotLineSafe(_) | CodecError::UnknownCodec(_) => {
                ErrorCode::InvalidRequest
            }
            CodecError::Truncated(_)
            | CodecError::Header { .. }
            | CodecError::NotUtf8
            | CodecError::Attachment { .. } => ErrorCode::Protocol,
        }
    }
}
