//! Errors of calling through a pool.

use crate::protocol::{ErrorBody, ErrorCode};
use crate::worker::{CallError, SpawnError};
use std::time::Duration;

/// Why a pool call (or starting a pool) failed. Every variant maps to a stable
/// [`ErrorCode`]; a worker's own failures keep theirs ([`CallError::code`],
/// [`SpawnError::code`]).
///
/// ```
/// use ferry::prelude::*;
///
/// let err = PoolError::CircuitOpen("sdxl".into());
/// assert_eq!(err.code(), ErrorCode::Unavailable);
/// assert!(err.code().is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The wait queue is full.
    #[error("overloaded: {capacity} callers already wait for a {worker_type} worker")]
    Overloaded {
        /// The worker type.
        worker_type: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The worker type keeps failing; calls fail fast until a probe succeeds.
    #[error("circuit breaker open for worker type {0}: its workers keep failing")]
    CircuitOpen(String),
    /// The pool is stopping.
    #[error("pool for worker type {0} is shutting down")]
    ShuttingDown(String),
    /// No worker had room before the deadline.
    #[error("no {worker_type} worker was free within {waited:?}")]
    QueueTimeout {
        /// The worker type.
        worker_type: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The call reached a worker and failed there (or its link broke).
    #[error(transparent)]
    Call(#[from] CallError),
    /// No worker could be started ([`PoolConfig::strict_start`](super::PoolConfig::strict_start)).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The pool's settings are invalid.
    #[error("invalid pool configuration: {0}")]
    Config(#[from] super::ConfigError),
}

impl PoolError {
    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PoolError::Overloaded { .. } => ErrorCode::Overloaded,
            PoolError::CircuitOpen(_) | PoolError::ShuttingDown(_) => ErrorCode::Unavailable,
            PoolError::QueueTimeout { .. } => ErrorCode::Timeout,
            PoolError::Call(e) => e.code(),
            PoolError::Spawn(e) => e.code(),
            PoolError::Config(_) => ErrorCode::InvalidRequest,
        }
    }

    /// The error as a protocol error body.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PoolError::Call(e) => e.to_body(),
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}
