//! Lifecycle events of a pool's workers, published on a broadcast channel and logged.

use serde::Serialize;

/// What happened to a worker (or to the worker type's breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LifecycleKind {
    /// Its process was started.
    Started,
    /// It sent `ready` and takes requests.
    Ready,
    /// It failed a health check (no answer in time, or an error).
    Unhealthy,
    /// It exited, its link broke, or it failed to start.
    Crashed,
    /// A replacement is scheduled.
    Restarted,
    /// It was stopped on purpose (idle, restart request, shutdown).
    Stopped,
    /// The worker type's circuit breaker opened.
    BreakerOpened,
    /// The worker type's circuit breaker closed.
    BreakerClosed,
    /// The worker reported a change of its own status (a `status_change` event sent
    /// during a request: loading a model, generating, idle again); `detail` is the status,
    /// `data` what the worker reported.
    StatusChange,
    /// A health check fell due while the worker, a legacy one, was working: it is not
    /// probed until it is idle (a probe would wait behind the request). Published once per
    /// health interval of work.
    HealthDeferred,
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleEvent {
    /// The worker type.
    pub worker_type: String,
    /// The worker id (empty for breaker events).
    pub worker_id: String,
    /// What happened.
    pub kind: LifecycleKind,
    /// The process id, when one is known.
    pub pid: Option<u32>,
    /// Human-readable detail (exit status, error).
    pub detail: String,
    /// The worker's device (see [`PoolConfig::devices`](super::PoolConfig::devices)),
    /// when it has one.
    pub device: Option<String>,
    /// What the worker reported, for [`LifecycleKind::StatusChange`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<super::WorkerTelemetry>,
}
