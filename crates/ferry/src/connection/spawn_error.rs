//! Errors of starting a worker, apart from those of calling one.

use super::CallError;
use crate::codec::CodecError;
use crate::protocol::{ErrorBody, ErrorCode, ProtocolError};
use crate::transport::TransportError;
use std::time::Duration;

/// Why a worker could not be started: everything that can go wrong from the spec to the
/// worker's `ready` event. Every variant maps to a stable [`ErrorCode`].
///
/// Calls to a started worker fail with [`CallError`] instead.
///
/// ```
/// use ferry::prelude::*;
///
/// let spec = WorkerSpec::new("echo", "/nonexistent/worker", Vec::<String>::new());
/// let err = WorkerProcess::spawn(spec).unwrap_err();
/// assert!(matches!(err, SpawnError::CannotStart { .. }));
/// assert_eq!(err.code(), ErrorCode::StartupFailed);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The spec cannot work (the legacy dialect over a transport other than stdio); nothing
    /// was started.
    #[error("{option}: {reason}")]
    InvalidSpec {
        /// The spec's field.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The worker process could not be started (no such program, no permission, no
    /// private temp folder).
    #[error("cannot start `{command}`: {source}")]
    CannotStart {
        /// The command.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker exited (or closed its channel) before sending `ready`.
    #[error("worker exited before ready ({status})")]
    ExitedBeforeReady {
        /// How it ended, as far as known.
        status: String,
    },
    /// The worker sent nothing valid within the startup timeout.
    #[error("worker sent no ready event within {0:?}")]
    StartupTimeout(Duration),
    /// The worker's first message broke the protocol (not `ready`, another version, a
    /// codec it does not speak).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The worker's first message could not be decoded, or the codec does not fit the
    /// transport.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The transport could not be set up or failed during the handshake.
    #[error(transparent)]
    Transport(TransportError),
}

impl SpawnError {
    /// The stable error code: `startup_failed` for a worker that could not start or did
    /// not get ready, `invalid_request` for a spec that cannot work, and the code of the
    /// protocol, codec or transport failure otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            SpawnError::InvalidSpec { .. } => ErrorCode::InvalidRequest,
            SpawnError::CannotStart { .. }
            | SpawnError::ExitedBeforeReady { .. }
            | SpawnError::StartupTimeout(_) => ErrorCode::StartupFailed,
            SpawnError::Protocol(e) => e.code(),
            SpawnError::Codec(e) => e.code(),
            SpawnError::Transport(e) => e.code(),
        }
    }

    /// The error as a protocol error body (for answering a caller).
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }

    pub(crate) fn exited(status: Option<std::process::ExitStatus>) -> Self {
        SpawnError::ExitedBeforeReady {
            status: CallError::status_text(status),
        }
    }
}
