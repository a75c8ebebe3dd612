//! The environment variables a host sets for the worker it spawns.
//!
//! A worker in any language reads these to find its channel (see `docs/protocol.md`).

use crate::codec::{CodecKind, DEFAULT_MAX_FRAME};
use crate::transport::TransportKind;

/// Which transport carries the protocol: `stdio` (default), `socket`, `tcp`.
pub const FERRY_TRANSPORT: &str = "FERRY_TRANSPORT";
/// Which codec encodes envelopes: `json` (default), `msgpack`, `bincode`.
pub const FERRY_CODEC: &str = "FERRY_CODEC";
/// The maximum frame size in bytes, both directions.
pub const FERRY_MAX_FRAME: &str = "FERRY_MAX_FRAME";
/// The id the host gave this worker (for logs).
pub const FERRY_WORKER_ID: &str = "FERRY_WORKER_ID";
/// The worker type the host expects.
pub const FERRY_WORKER_TYPE: &str = "FERRY_WORKER_TYPE";
/// The host's process id, so a worker can notice its host is gone.
pub const FERRY_HOST_PID: &str = "FERRY_HOST_PID";
/// The worker's private temp folder, made by the host (also in `TMPDIR`, `TMP`,
/// `TEMP`): removed by the host when the worker ends, and by the worker's watchdog when
/// the host dies first.
pub const FERRY_TMPDIR: &str = "FERRY_TMPDIR";
/// `socket` transport: the name to connect to, a path or `@name` (namespaced).
pub const FERRY_SOCKET: &str = "FERRY_SOCKET";
/// `tcp` transport: the host's address, `host:port`.
pub const FERRY_TCP_ADDR: &str = "FERRY_TCP_ADDR";
/// `socket` and `tcp` transports: the token to offer in the connection handshake.
pub const FERRY_TOKEN: &str = "FERRY_TOKEN";

/// Why the worker-side environment is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct EnvError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The channel settings a worker reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    /// `FERRY_TRANSPORT`.
    pub transport: TransportKind,
    /// `FERRY_CODEC`.
    pub codec: CodecKind,
    /// `FERRY_MAX_FRAME`.
    pub max_frame: usize,
}

impl WorkerEnv {
    /// Reads the settings; unset variables take their defaults.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `lookup` (testable without touching the process env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let bad = |var: &'static str, value: &str, reason: String| EnvError {
            var,
            value: value.to_owned(),
            reason,
        };
        let transport = match lookup(FERRY_TRANSPORT) {
            None => TransportKind::default(),
            Some(v) => v.parse().map_err(|e: crate::transport::TransportError| {
                bad(FERRY_TRANSPORT, &v, e.to_string())
            })?,
        };
        let codec = match lookup(FERRY_CODEC) {
            None => CodecKind::default(),
            Some(v) => v
                .parse()
                .map_err(|e: crate::codec::CodecError| bad(FERRY_CODEC, &v, e.to_string()))?,
        };
        let max_frame =
            match lookup(FERRY_MAX_FRAME) {
                None => DEFAULT_MAX_FRAME,
                Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(FERRY_MAX_FRAME, &v, "expected a positive byte count".into())
                })?,
            };
        Ok(WorkerEnv {
            transport,
            codec,
            max_frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_take_defaults() {
        let env = WorkerEnv::from_lookup(|_| None).unwrap();
        assert_eq!(env.transport, TransportKind::Stdio);
        assert_eq!(env.codec, CodecKind::Json);
        assert_eq!(env.max_frame, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err =
            WorkerEnv::from_lookup(|k| (k == FERRY_MAX_FRAME).then(|| "lots".into())).unwrap_err();
        assert_eq!(err.var, FERRY_MAX_FRAME);
        let err = WorkerEnv::from_lookup(|k| (k == FERRY_CODEC).then(|| "xml".into())).unwrap_err();
        assert_eq!(err.var, FERRY_CODEC);
    }
}
