//! A snapshot of one worker, for `/api/workers/status` and embedding hosts.

use serde::Serialize;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Its process is starting (before `ready`).
    Starting,
    /// Serving.
    Ready,
    /// Failed a health check; being replaced.
    Unhealthy,
    /// Crashed; waiting out its restart delay.
    Restarting,
    /// Being stopped.
    Stopping,
    /// Stopped for good.
    Stopped,
}

/// A snapshot of one worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// The worker id (stable across restarts).
    pub id: String,
    /// Its worker type.
    pub worker_type: String,
    /// Its state.
    pub state: WorkerState,
    /// The current process id.
    pub pid: Option<u32>,
    /// Requests it has in flight.
    pub in_flight: usize,
    /// Requests it has answered (all its processes).
    pub requests_served: u64,
    /// How many times it was restarted.
    pub restarts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Seconds since its current process became ready.
    pub uptime_s: Option<f64>,
}
