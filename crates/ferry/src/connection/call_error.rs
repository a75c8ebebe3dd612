//! Errors of calling a worker from the host.

use crate::codec::CodecError;
use crate::protocol::{ErrorBody, ErrorCode, ProtocolError};
use crate::transport::TransportError;
use std::process::ExitStatus;

/// Why a call to a running worker failed. Every variant maps to a stable [`ErrorCode`].
///
/// Starting a worker fails with [`SpawnError`](super::SpawnError) instead.
///
/// ```
/// use ferry::prelude::*;
/// use ferry::protocol::ErrorBody;
///
/// let err = CallError::Remote(ErrorBody::new(ErrorCode::InvalidRequest, "prompt: required"));
/// assert_eq!(err.code(), ErrorCode::InvalidRequest);
/// assert!(!err.code().is_retryable());
/// assert_eq!(err.to_string(), "invalid_request: prompt: required");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The worker answered with an error message.
    #[error("{}: {}", .0.code, .0.message)]
    Remote(ErrorBody),
    /// The worker died (or closed its channel) while a request was in flight.
    #[error("worker crashed ({status})")]
    WorkerCrashed {
        /// How it ended, as far as known.
        status: String,
    },
    /// The request's deadline passed; a cancel was sent to the worker.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A frame could not be decoded or encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The worker broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The link failed in another way (oversized frame, I/O).
    #[error(transparent)]
    Transport(TransportError),
}

impl CallError {
    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Remote(body) => body.code,
            CallError::WorkerCrashed { .. } => ErrorCode::WorkerCrashed,
            CallError::Timeout(_) => ErrorCode::Timeout,
            CallError::Codec(e) => e.code(),
            CallError::Protocol(e) => e.code(),
            CallError::Transport(e) => e.code(),
        }
    }

    /// The error as a protocol error body (for answering a caller).
    pub fn to_body(&self) -> ErrorBody {
        match self {
            CallError::Remote(body) => body.clone(),
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }

    pub(crate) fn status_text(status: Option<ExitStatus>) -> String {
        match status {
            Some(s) => s.to_string(),
            None => "channel closed, process still running".to_owned(),
        }
    }
}
