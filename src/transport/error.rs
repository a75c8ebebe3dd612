//! Transport errors.

use crate::protocol::ErrorCode;

/// Why a frame could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the link or died.
    #[error("peer disconnected")]
    Disconnected,
    /// The deadline passed with no complete frame.
    #[error("receive deadline passed")]
    Timeout,
    /// A frame over the maximum was offered or announced.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The size offered or announced (for a line: the bytes read before giving up).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A frame this link cannot carry (e.g. a newline on a line link, or an empty frame).
    #[error("invalid frame: {0}")]
    InvalidFrame(&'static str),
    /// The connection handshake failed: a wrong token, or a peer that is not ferry.
    #[error("handshake refused: {0}")]
    Refused(&'static str),
    /// The transport or an option of it is not available here.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An operating-system error other than the peer going away.
    #[error("transport I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// The wire error code for this failure, as seen by a caller whose request was on it.
    pub fn code(&self) -> ErrorCode {
        match self {
            TransportError::Disconnected | TransportError::Io(_) => ErrorCode::WorkerCrashed,
            TransportError::Timeout => ErrorCode::Timeout,
            TransportError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            TransportError::InvalidFrame(_) | TransportError::Refused(_) => ErrorCode::Protocol,
            TransportError::Unsupported(_) => ErrorCode::InvalidRequest,
        }
    }

    /// Maps an OS error, folding the ways a dead peer shows itself into `Disconnected`.
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected => {
                TransportError::Disconnected
            }
            _ => TransportError::Io(e),
        }
    }
}
