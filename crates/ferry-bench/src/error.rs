//! Errors of the benchmark suite.

use ferry::worker::{CallError, SpawnError};
use std::time::Duration;

/// Why a benchmark case (or the whole run) failed. Every variant has a stable
/// [`code`](BenchError::code), written beside the message in the JSON report's `failures`.
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
    /// An engine call failed (a round trip). A passed deadline is
    /// [`NoAnswer`](BenchError::NoAnswer) instead.
    #[error(transparent)]
    Call(CallError),
    /// The worker did not answer a request within its deadline (the `--cmd` worker's
    /// `--cmd-timeout-ms`): it does not serve `echo`, or hangs. A cancel was sent.
    #[error("no answer to `echo` within {} ms: the worker must answer the `echo` operation with the request's data and attachments", .timeout.as_millis())]
    NoAnswer {
        /// The per-request deadline that passed.
        timeout: Duration,
    },
    /// A bare peer, the HTTP server, or a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Another project's ping-pong peer (iceoryx2) could not start, answer or stop, or
    /// this build does not have it.
    #[error("{peer} peer failed: {reason}")]
    PeerFailed {
        /// The peer (`iceoryx2`).
        peer: &'static str,
        /// What went wrong.
        reason: String,
    },
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

impl From<CallError> for BenchError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(timeout) => BenchError::NoAnswer { timeout },
            other => BenchError::Call(other),
        }
    }
}

impl BenchError {
    /// The stable code of this error (`bench_*` for the harness's own; a worker's spawn
    /// and call errors keep the engine's code, e.g. `startup_failed`).
    pub fn code(&self) -> &'static str {
        match self {
            BenchError::UnknownTransport { .. } => "bench_unknown_transport",
            BenchError::UnknownWorker(_) => "bench_unknown_worker",
            BenchError::UnknownPin(_) => "bench_unknown_pin",
            BenchError::NotEnoughCpus { .. } => "bench_not_enough_cpus",
            BenchError::Spawn(e) => e.code().as_str(),
            BenchError::Call(e) => e.code().as_str(),
            BenchError::NoAnswer { .. } => "bench_no_answer",
            BenchError::Io(_) => "bench_io",
            BenchError::PeerFailed { .. } => "bench_peer_failed",
            BenchError::BadEcho(_) => "bench_bad_echo",
            BenchError::Harness(_) => "bench_harness",
            BenchError::Json(_) => "bench_json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_is_no_answer_with_its_own_code() {
        let e = BenchError::from(CallError::Timeout(Duration::from_millis(250)));
        assert!(matches!(e, BenchError::NoAnswer { .. }), "{e:?}");
        assert_eq!(e.code(), "bench_no_answer");
        assert!(e.to_string().contains("250 ms"), "{e}");
        let e = BenchError::from(CallError::WorkerCrashed {
            status: "exit 1".into(),
        });
        assert_eq!(e.code(), "worker_crashed");
    }
}
