//! Orchestrator errors.

use ferry::pool::PoolError;
use ferry::protocol::{ErrorBody, ErrorCode};

/// Why an orchestrator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// No such worker type is configured.
    #[error("no worker type `{0}` is configured")]
    UnknownWorkerType(String),
    /// No such workflow, session, batch or worker.
    #[error("no {0}")]
    NotFound(String),
    /// The request is not valid (bad workflow, bad batch spec).
    #[error("{0}")]
    Invalid(String),
    /// The control does not apply in the current state.
    #[error("{0}")]
    InvalidState(String),
    /// The request would take the server past one of its `[limits]`.
    #[error("{0}")]
    LimitReached(String),
    /// HTTP clients may not do this (an operation outside the worker type's
    /// `api_operations`, a workflow from the configuration file).
    #[error("{0}")]
    NotAllowed(String),
    /// A pool call failed.
    #[error("{0}: {1}")]
    Pool(String, #[source] PoolError),
    /// The state store failed (it is unreachable, or holds what it cannot read).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl OrchestratorError {
    /// The protocol error code (`None` for not-found and state conflicts, which only the
    /// HTTP layer has codes for).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            OrchestratorError::UnknownWorkerType(_) | OrchestratorError::Invalid(_) => {
                Some(ErrorCode::InvalidRequest)
            }
            OrchestratorError::Pool(_, e) => Some(e.code()),
            OrchestratorError::LimitReached(_) => Some(ErrorCode::Overloaded),
            OrchestratorError::State(crate::state::StateError::LimitReached(_)) => {
                Some(ErrorCode::Overloaded)
            }
            OrchestratorError::State(_) => Some(ErrorCode::Unavailable),
            OrchestratorError::NotFound(_)
            | OrchestratorError::InvalidState(_)
            | OrchestratorError::NotAllowed(_) => None,
        }
    }

    /// The error as a protocol error body.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            OrchestratorError::Pool(_, e) => e.to_body(),
            other => ErrorBody::new(
                other.code().unwrap_or(ErrorCode::InvalidRequest),
                other.to_string(),
            ),
        }
    }
}

impl From<serde_json::Error> for OrchestratorError {
    /// A value that does not go to or come from JSON: what the store holds is unreadable.
    fn from(e: serde_json::Error) -> Self {
        OrchestratorError::State(crate::state::StateError::from(e))
    }
}
