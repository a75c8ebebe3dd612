//! The two dialects a connection speaks: how a request is written and a frame read in
//! ferry's protocol (any codec) and in the old design's six-line JSON worker protocol.

use super::{CallError, Connection, TxHalf};
use crate::codec::{check_data_depth, with_parts, CodecError, DecodedFrame, EnvelopeRef, Framing};
use crate::protocol::{legacy, Dialect, Envelope, MessageType, ProtocolError, PROTOCOL_VERSION};
use crate::transport::TransportError;
use serde_json::Value;
use std::sync::atomic::Ordering;

impl Connection {
    /// Sends `env` (a request or a cancel) with `attachments`; `id_number` is the number
    /// of the id a compact header carries for it, when the caller holds it.
    pub(super) fn send_request(
        &self,
        env: &EnvelopeRef<'_>,
        id_number: Option<u64>,
        attachments: &[&[u8]],
    ) -> Result<(), CallError> {
        let mut tx = self.tx.lock();
        let TxHalf { sender, out } = &mut *tx;
        let result = match self.dialect {
            Dialect::Ferry => {
                match self.compact.get() {
                    Some(wire) => wire.encode_numbered(env, id_number, attachments, out)?,
                    None => self.wire_codec().encode_ref(env, attachments, out)?,
                }
                let raw = match self.wire_codec().framing() {
                    Framing::LengthPrefixed => attachments,
                    Framing::Lines => &[],
                };
                with_parts(out, raw, |parts| sender.send(parts))
            }
            Dialect::Legacy => {
                out.clear();
                legacy::write_request(env.operation, env.message_id, env.data, out).map_err(
                    |e| CodecError::Header {
                        codec: crate::codec::CodecKind::Json,
                        source: crate::codec::HeaderError::serde(e),
                    },
                )?;
                sender.send(&[out])
            }
        };
        result.map_err(|e| match e {
            TransportError::Disconnected => CallError::WorkerCrashed {
                status: "channel closed while sending".into(),
            },
            other => CallError::Transport(other),
        })
    }

    /// Decodes one received frame in this connection's dialect, its attachments left where
    /// they are in `frame` (see [`Lent::attachments`]). `None`: nothing to route (noise
    /// that was skipped and counted, or a version switch that failed every pending
    /// request).
    pub(super) fn decode_frame_lent<'p>(
        &self,
        frame: &[u8],
        place: &'p mut DecodedFrame,
    ) -> Option<Lent<'p>> {
        Some(match self.dialect {
            Dialect::Ferry => match match self.compact.get() {
                // Into the place the answer before was decoded in: no allocation for its
                // id or attachment list.
                Some(wire) => wire.decode_into(frame, place),
                None => self.wire_codec().decode_into(frame, place),
            } {
                Ok(()) => Lent::Frame(place),
                Err(e @ CodecError::Protocol(ProtocolError::VersionMismatch { got, .. })) => {
                    // Every caller hears the version the worker really sent.
                    self.fail_pending_with(|| {
                        CallError::Protocol(ProtocolError::VersionMismatch {
                            expected: PROTOCOL_VERSION,
                            got,
                        })
                    });
                    tracing::error!(worker = %self.label, error = %e, "worker switched protocol version");
                    return None;
                }
                Err(e) if self.is_noise(&e) && !self.names_a_pending_request(frame) => {
                    self.skip(frame, &e);
                    return None;
                }
                Err(e) => {
                    self.refuse(frame, e);
                    return None;
                }
            },
            Dialect::Legacy => {
                let value = match serde_json::from_slice::<Value>(frame) {
                    Ok(value) => value,
                    Err(e) => {
                        // An answer the parser cannot hold (data nested past its limit)
                        // fails its request rather than being skipped while it waits.
                        match legacy::marked_answer(frame) {
                            Some(named) => self.refuse_legacy(named, e),
                            None => self.skip(frame, &e),
                        }
                        return None;
                    }
                };
                let decoded = legacy::decode_answer(value, self.ids.next_id());
                let env = match decoded {
                    Ok(env) => env,
                    Err(e) => {
                        self.skip(frame, &e);
                        return None;
                    }
                };
                // The same nesting limit as every codec's, so the answer's data can be
                // passed on in any of them. Past it, the answer is refused, not skipped:
                // its caller hears why.
                if let Err(e) = check_data_depth(env.data.as_ref(), frame.len()) {
                    tracing::warn!(worker = %self.label, error = %e, "refusing an answer");
                    let key = self.key_of(&env, &self.state.lock());
                    if let Some(key) = key {
                        self.fail_one(key, CallError::Codec(e));
                    }
                    return None;
                }
                Lent::Legacy(Box::new(env))
            }
        })
    }

    /// Fails the request a legacy answer that cannot be parsed whole answers (`named`, as
    /// [`legacy::marked_answer`] read it; else the one in flight) with `why`. An answer to
    /// a request no longer pending is dropped, as a readable one is (not counted as noise).
    fn refuse_legacy(&self, named: Option<String>, why: serde_json::Error) {
        let key = {
            let st = self.state.lock();
            self.key_for(named.as_deref(), &st)
                .filter(|key| st.pending.contains_key(key))
        };
        let Some(key) = key else {
            tracing::debug!(worker = %self.label, error = %why, "unreadable answer for a request no longer pending");
            return;
        };
        tracing::warn!(worker = %self.label, error = %why, "refusing an answer");
        let e = CodecError::Header {
            codec: crate::codec::CodecKind::Json,
            source: crate::codec::HeaderError::serde(why),
        };
        self.fail_one(key, CallError::Codec(e));
    }

    /// Whether a frame that does not decode is a stray print to skip: only on a line link
    /// (never after a stdio switch, where every frame must be a protocol frame).
    pub(super) fn is_noise(&self, e: &CodecError) -> bool {
        self.wire_codec().framing() == Framing::Lines
            && matches!(e, CodecError::NotUtf8 | CodecError::Header { .. })
    }

    /// Whether a line that looks like noise is an envelope (it has `version` and `type`)
    /// answering a request still pending: a worker's answer with a field of the wrong type,
    /// which must fail that request rather than be skipped while its caller waits.
    fn names_a_pending_request(&self, frame: &[u8]) -> bool {
        self.wire_codec()
            .answer_id(frame)
            .and_then(|id| self.ids.number_of(&id))
            .is_some_and(|key| self.state.lock().pending.contains_key(&key))
    }

    /// A frame that is not noise and does not decode: the worker broke the protocol, and
    /// the answer it carried is lost. The request it names, when its id can still be read,
    /// fails with the reason; when none can be read, every pending request fails (as for an
    /// oversized frame): each may have been the one it answered, and none must wait for an
    /// answer that will not come.
    pub(super) fn refuse(&self, frame: &[u8], e: CodecError) {
        let id = match self.compact.get() {
            Some(wire) => wire.answer_id(frame),
            None => self.wire_codec().answer_id(frame),
        };
        tracing::warn!(worker = %self.label, error = %e, request = ?id, "refusing an unreadable frame");
        let Some(id) = id else {
            let why = e.to_string();
            self.fail_pending_with(|| {
                CallError::Protocol(ProtocolError::UnattributableFrame(why.clone()))
            });
            return;
        };
        if let Some(key) = self.ids.number_of(&id) {
            self.fail_one(key, CallError::Codec(e));
        }
    }

    /// Fails request `key` with `error`, when it is still pending (else nobody waits).
    fn fail_one(&self, key: u64, error: CallError) {
        let slot = {
            let mut st = self.state.lock();
            st.forget(key);
            st.pending.remove(&key)
        };
        if let Some(slot) = slot {
            slot.deliver(super::slot::Incoming::Done(Err(error)));
            self.freed();
        }
    }

    pub(super) fn skip(&self, frame: &[u8], e: &dyn std::fmt::Display) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let preview = String::from_utf8_lossy(&frame[..frame.len().min(200)]).into_owned();
        tracing::warn!(worker = %self.label, error = %e, line = %preview, "skipping non-protocol output");
    }
}

/// A frame decoded with its attachments still in the frame's bytes.
pub(super) enum Lent<'p> {
    /// A ferry frame, decoded into the receive half's place: its envelope and where its
    /// attachments lie.
    Frame(&'p mut DecodedFrame),
    /// An old-protocol answer (no attachments), boxed: the legacy path is tens of
    /// microseconds per line anyway, and the frame path stays a pointer.
    Legacy(Box<Envelope>),
}

impl Lent<'_> {
    /// The envelope, moved out (the place keeps an empty one).
    pub(super) fn into_envelope(self) -> Envelope {
        match self {
            Lent::Frame(d) => std::mem::replace(
                &mut d.envelope,
                Envelope::new(MessageType::Response, String::new()),
            ),
            Lent::Legacy(env) => *env,
        }
    }

    /// Drops the answer's data from the receive half's place once it has been seen, so a
    /// large one is not held while the link is idle.
    pub(super) fn release_data(&mut self) {
        if let Lent::Frame(d) = self {
            d.envelope.data = None;
        }
    }

    /// The number of the request it names, when the frame carried it as one (compact).
    pub(super) fn id_number(&self) -> Option<u64> {
        match self {
            Lent::Frame(d) => d.id_number(),
            Lent::Legacy(_) => None,
        }
    }

    /// The envelope.
    pub(super) fn envelope(&self) -> &Envelope {
        match self {
            Lent::Frame(d) => &d.envelope,
            Lent::Legacy(env) => env,
        }
    }

    /// Runs `f` on the attachments, borrowed from `frame` (the bytes that were decoded).
    pub(super) fn with_attachments<R>(&self, frame: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> R {
        match self {
            Lent::Frame(d) => d.with_attachments(frame, f),
            Lent::Legacy(_) => f(&[]),
        }
    }

    /// The attachments copied out of `frame`.
    pub(super) fn attachments_owned(&self, frame: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Lent::Frame(d) if d.attachment_count() > 0 => d.attachments_owned(frame),
            _ => Vec::new(),
        }
    }
}
