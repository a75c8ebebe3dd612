//! Transport errors.

use crate::protocol::ErrorCode;

/// Why a frame could not be moved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The transport cannot do what was asked (e.g. switch its framing).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The connection handshake failed: a wrong token, or a peer that is not ferry.
    #[error("handshake refused: {0}")]
    Refused(&'static str),
    /// A name that does not denote anything of its kind (a transport, a wait strategy).
    #[error("unknown {what} `{name}` (expected {expected})")]
    UnknownName {
        /// What kind of name (`transport`, `shm wait strategy`).
        what: &'static str,
        /// The name given.
        name: String,
        /// The names that exist.
        expected: String,
    },
    /// A host-side option that cannot be used (an empty token, a socket path that is not
    /// UTF-8, a dialect on a transport that cannot carry it).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A worker-side environment variable the host should have set is missing or wrong
    /// (a worker started by hand, or by a host of another version).
    #[error("{var}: {reason}")]
    BadEnvironment {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS settings that cannot be used: an unreadable certificate, key or CA file, a file
    /// with no PEM item of the kind expected, a key that does not match the certificate, a
    /// server name that is neither a DNS name nor an IP address.
    #[error("TLS {item}: {reason}")]
    TlsConfig {
        /// What is wrong (`certificate chain`, `private key`, `trusted certificates`,
        /// `server name`, ...).
        item: &'static str,
        /// Why, with the file it came from.
        reason: String,
    },
    /// The TLS handshake failed: a peer that does not speak TLS, a certificate that is not
    /// trusted or not for the expected name, no protocol version in common, or a peer that
    /// closed the connection during it.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    /// A shared-memory segment whose header or size is not a ferry segment's.
    #[error("shm segment: {0}")]
    CorruptSegment(String),
    /// Something that should not happen did: a helper thread could not start or panicked,
    /// a resource was used twice.
    #[error("internal transport failure: {0}")]
    Internal(String),
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
            TransportError::InvalidFrame(_)
            | TransportError::Refused(_)
            | TransportError::Unsupported(_) => ErrorCode::Protocol,
            TransportError::UnknownName { .. }
            | TransportError::InvalidOption { .. }
            | TransportError::TlsConfig { .. } => ErrorCode::InvalidRequest,
            TransportError::TlsHandshake(_) => ErrorCode::Protocol,
            TransportError::BadEnvironment { .. } => ErrorCode::StartupFailed,
            TransportError::CorruptSegment(_) => ErrorCode::Protocol,
            TransportError::Internal(_) => ErrorCode::Internal,
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
