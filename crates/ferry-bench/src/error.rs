//! Errors of the benchmark suite.

use ferry::worker::{CallError, SpawnError};

/// Why a benchmark case (or the whole run) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A transport or worker name on the command line is not known at all.
    #[error("unknown transport `{name}` (known: {known})")]
    UnknownTransport {
        /// The name given.
        name: String,
        /// The names this suite knows, comma-separated.
        known: String,
    },
    /// A worker language other than `rust` or `python`.
    #[error("unknown worker `{0}` (expected rust or python)")]
    UnknownWorker(String),
    /// A pinning mode other than `none`, `split` or `same`.
    #[error("unknown pinning `{0}` (expected none, split or same)")]
    UnknownPin(String),
    /// Pinning needs CPUs this process may not run on.
    #[error("pinning `{pin}` needs {needed} CPUs, this process may use {available}")]
    NotEnoughCpus {
        /// The pinning mode.
        pin: &'static str,
        /// CPUs it needs.
        needed: usize,
        /// CPUs in this process's affinity mask.
        available: usize,
    },
    /// A worker could not be started (spawn, handshake).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// An engine call failed (a round trip).
    #[error(transparent)]
    Call(#[from] CallError),
    /// A bare peer, the HTTP server, or a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A peer answered something other than the payload sent.
    #[error("bad echo: {0}")]
    BadEcho(String),
    /// The harness itself failed (a caller thread panicked, a histogram refused a value).
    #[error("benchmark harness: {0}")]
    Harness(String),
    /// Writing the JSON report failed.
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
}
