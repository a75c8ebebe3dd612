//! The environment variables a host sets for the worker it spawns.
//!
//! A worker in any language reads these to find its channel (see `docs/protocol.md`).

use crate::codec::{CodecKind, Framing, DEFAULT_MAX_FRAME};
pub use crate::protocol::env::*;
use crate::protocol::FrameHeader;
use crate::transport::TransportKind;

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
    /// `FERRY_FRAME_HEADER`: the frame header the host offers (`envelope` when unset).
    pub frame_header: FrameHeader,
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
        let frame_header = match lookup(FERRY_FRAME_HEADER) {
            None => FrameHeader::Envelope,
            Some(v) => v
                .parse()
                .map_err(|e: crate::protocol::UnknownFrameHeader| {
                    bad(FERRY_FRAME_HEADER, &v, e.to_string())
                })?,
        };
        Ok(WorkerEnv {
            transport,
            codec,
            max_frame,
            frame_header,
        })
    }

    /// What a worker speaking every frame header puts in `ready.frame_header` on a link
    /// of `framing`: the host's offer of `compact` on a framed link, else nothing.
    ///
    /// ```
    /// use ferry::codec::Framing;
    /// use ferry::protocol::FrameHeader;
    /// use ferry::worker::env::{WorkerEnv, FERRY_FRAME_HEADER};
    /// let env = WorkerEnv::from_lookup(|k| (k == FERRY_FRAME_HEADER).then(|| "compact".into()))?;
    /// assert_eq!(env.accepted_frame_header(Framing::LengthPrefixed), Some(FrameHeader::Compact));
    /// assert_eq!(env.accepted_frame_header(Framing::Lines), None);
    /// # Ok::<(), ferry::worker::env::EnvError>(())
    /// ```
    pub fn accepted_frame_header(&self, framing: Framing) -> Option<FrameHeader> {
        (self.frame_header == FrameHeader::Compact && framing == Framing::LengthPrefixed)
            .then_some(FrameHeader::Compact)
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
