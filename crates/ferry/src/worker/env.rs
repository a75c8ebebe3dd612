//! The environment variables a host sets for the worker it spawns.
//!
//! A worker in any language reads these to find its channel (see `docs/protocol.md`).

use crate::codec::{CodecKind, Framing, DEFAULT_MAX_FRAME};
pub use crate::protocol::env::*;
use crate::protocol::{FrameHeader, ReadyInfo, StdioFraming};
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
    /// `FERRY_STDIO_FRAMING`: the framing the host offers for after `ready` on stdio
    /// (`lines` when unset).
    pub stdio_framing: StdioFraming,
    /// `FERRY_STDIO_CODEC`: the codec offered for after the switch; set whenever
    /// `stdio_framing` is `length_prefixed`.
    pub stdio_codec: Option<CodecKind>,
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
        let stdio_framing = match lookup(FERRY_STDIO_FRAMING) {
            None => StdioFraming::Lines,
            Some(v) => v
                .parse()
                .map_err(|e: crate::protocol::UnknownStdioFraming| {
                    bad(FERRY_STDIO_FRAMING, &v, e.to_string())
                })?,
        };
        let stdio_codec = match lookup(FERRY_STDIO_CODEC) {
            None => None,
            Some(v) => Some(v.parse().map_err(|e: crate::codec::CodecError| {
                bad(FERRY_STDIO_CODEC, &v, e.to_string())
            })?),
        };
        if stdio_framing == StdioFraming::LengthPrefixed && stdio_codec.is_none() {
            return Err(bad(
                FERRY_STDIO_FRAMING,
                stdio_framing.as_str(),
                format!("{FERRY_STDIO_CODEC} must name the codec for after the switch"),
            ));
        }
        Ok(WorkerEnv {
            transport,
            codec,
            max_frame,
            frame_header,
            stdio_framing,
            stdio_codec,
        })
    }

    /// The codec a worker speaking every framing switches to after `ready` on a link of
    /// `framing`: the host's `FERRY_STDIO_CODEC` when it offered length-prefixed frames on
    /// a stdio (line) link, else `None` (the link stays on lines).
    ///
    /// ```
    /// use ferry::codec::{CodecKind, Framing};
    /// use ferry::worker::env::{WorkerEnv, FERRY_STDIO_CODEC, FERRY_STDIO_FRAMING};
    /// let env = WorkerEnv::from_lookup(|k| match k {
    ///     FERRY_STDIO_FRAMING => Some("length_prefixed".into()),
    ///     FERRY_STDIO_CODEC => Some("msgpack".into()),
    ///     _ => None,
    /// })?;
    /// assert_eq!(env.accepted_stdio_codec(Framing::Lines), Some(CodecKind::MsgPack));
    /// assert_eq!(env.accepted_stdio_codec(Framing::LengthPrefixed), None);
    /// # Ok::<(), ferry::worker::env::EnvError>(())
    /// ```
    pub fn accepted_stdio_codec(&self, framing: Framing) -> Option<CodecKind> {
        (self.transport == TransportKind::Stdio
            && framing == Framing::Lines
            && self.stdio_framing == StdioFraming::LengthPrefixed)
            .then_some(self.stdio_codec)
            .flatten()
    }

    /// Accepts every offer the host made that a link of `framing` can take, in `info`
    /// (the `ready` event to send): length-prefixed frames on stdio
    /// ([`accepted_stdio_codec`](Self::accepted_stdio_codec)), then the compact frame
    /// header on the framing the link has after that switch
    /// ([`accepted_frame_header`](Self::accepted_frame_header)).
    /// [`serve_link`](crate::worker::serve_link) switches as `info` says.
    pub fn accept_offers(&self, framing: Framing, info: &mut ReadyInfo) {
        let after = match self.accepted_stdio_codec(framing) {
            Some(codec) => {
                info.stdio_framing = Some(StdioFraming::LengthPrefixed);
                info.stdio_codec = Some(codec.as_str().to_owned());
                Framing::LengthPrefixed
            }
            None => framing,
        };
        info.frame_header = self.accepted_frame_header(after);
    }

    /// What a worker speaking every frame header puts in `ready.frame_header` on a link
    /// of `framing` (after any stdio switch): the host's offer of `compact` on a framed
    /// link, else nothing.
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
        let err = WorkerEnv::from_lookup(|k| (k == FERRY_STDIO_FRAMING).then(|| "framed".into()))
            .unwrap_err();
        assert_eq!(err.var, FERRY_STDIO_FRAMING);
    }

    #[test]
    fn a_stdio_offer_without_its_codec_is_refused() {
        let err = WorkerEnv::from_lookup(|k| {
            (k == FERRY_STDIO_FRAMING).then(|| "length_prefixed".into())
        })
        .unwrap_err();
        assert_eq!(err.var, FERRY_STDIO_FRAMING);
    }

    #[test]
    fn accepting_the_stdio_offer_also_accepts_compact_after_the_switch() {
        let env = WorkerEnv::from_lookup(|k| match k {
            FERRY_STDIO_FRAMING => Some("length_prefixed".into()),
            FERRY_STDIO_CODEC => Some("bincode".into()),
            FERRY_FRAME_HEADER => Some("compact".into()),
            _ => None,
        })
        .unwrap();
        let mut info = ReadyInfo::new("t", vec![]);
        env.accept_offers(Framing::Lines, &mut info);
        assert_eq!(info.stdio_framing, Some(StdioFraming::LengthPrefixed));
        assert_eq!(info.stdio_codec.as_deref(), Some("bincode"));
        assert_eq!(info.frame_header, Some(FrameHeader::Compact));
        // Without the stdio offer, compact is not for a line link.
        let env = WorkerEnv::from_lookup(|k| (k == FERRY_FRAME_HEADER).then(|| "compact".into()))
            .unwrap();
        let mut info = ReadyInfo::new("t", vec![]);
        env.accept_offers(Framing::Lines, &mut info);
        assert_eq!((info.stdio_framing, info.frame_header), (None, None));
    }
}
