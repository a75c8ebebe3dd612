//! Built-in operation and event names.

/// Liveness probe; every worker answers it, even while a handler runs (see `docs/protocol.md`).
pub const OP_HEALTH: &str = "health";
/// Returns the worker's [`ReadyInfo`](super::ReadyInfo) again.
pub const OP_CAPABILITIES: &str = "capabilities";
/// Asks the worker to answer and then exit cleanly.
pub const OP_SHUTDOWN: &str = "shutdown";
/// The handshake event, a worker's first message.
pub const EVENT_READY: &str = "ready";
/// A progress event for a running request.
pub const EVENT_PROGRESS: &str = "progress";
/// A worker's report of its own status, sent during a request (data `{"worker_id",
/// "status", "device", "memory_usage_mb", "gpu_utilization"}`, each optional): a pool
/// keeps it as the worker's telemetry and publishes it as a lifecycle event.
pub const EVENT_STATUS_CHANGE: &str = "status_change";

/// A request's operation, split into the built-ins the runtime answers itself and the rest.
///
/// ```
/// use ferry::protocol::Operation;
/// assert_eq!(Operation::classify("health"), Operation::Health);
/// assert_eq!(Operation::classify("inference"), Operation::Custom("inference"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation<'a> {
    /// `health`.
    Health,
    /// `capabilities`.
    Capabilities,
    /// `shutdown`.
    Shutdown,
    /// Anything else: passed to the worker's handler.
    Custom(&'a str),
}

impl<'a> Operation<'a> {
    /// Classifies an operation name.
    pub fn classify(name: &'a str) -> Self {
        match name {
            OP_HEALTH => Operation::Health,
            OP_CAPABILITIES => Operation::Capabilities,
            OP_SHUTDOWN => Operation::Shutdown,
            other => Operation::Custom(other),
        }
    }
}
