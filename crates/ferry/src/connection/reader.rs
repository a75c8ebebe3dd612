//! Reading the link: the leader (a caller, or the async reader thread) reads frames and
//! routes each to the slot of the request it names; see the module docs for who leads.

use super::dialect::Lent;
use super::slot::{Incoming, Slot};
use super::{CallError, Connection, Response, ResponseRef, RxHalf, State, READER_SLICE};
use crate::protocol::{Dialect, Envelope, ErrorBody, ErrorCode, MessageType, ProtocolError};
use crate::transport::TransportError;
use parking_lot::MutexGuard;
use std::sync::Arc;
use std::time::Instant;

/// What [`Connection::read_one`] does with the leader's own successful answer.
pub(super) enum OwnAnswer<'a> {
    /// Returns it as an [`Incoming`], as any message for the leader.
    Return,
    /// Shows it where it lies (in the ring on shm), before the frame's space is given back.
    Visit(&'a mut dyn FnMut(ResponseRef<'_>)),
    /// Moves it into this place, copied out of the frame once, without routing it: no
    /// `Incoming` is built or returned for it, so the large `Response` is not moved
    /// through the routing's return values.
    Take(&'a mut Option<Response>),
}

impl Connection {
    /// Reads one frame as leader and routes it; what is for `own` (the leader's slot) is
    /// returned instead of delivered. Link failures are returned after every pending
    /// request (`own` included) has been failed.
    ///
    /// With [`OwnAnswer::Visit`] or [`OwnAnswer::Take`], `own`'s successful answer is not
    /// returned: it is visited in place or moved into the caller's place, and `Ok(None)`
    /// is returned (the caller knows from its visitor, or its place, that it came).
    pub(super) fn read_one(
        &self,
        rx: &mut RxHalf,
        deadline: Option<Instant>,
        own: Option<&Arc<Slot>>,
        mut answer: OwnAnswer<'_>,
    ) -> Result<Option<Incoming>, TransportError> {
        // Decoded where the frame lies (in the ring on shm): the answer's data and
        // attachments are copied once, into what the caller owns, unless it visits them.
        let mut decoded = None;
        let RxHalf {
            receiver,
            buf,
            place,
        } = rx;
        match receiver.recv_with(buf, deadline, &mut |frame| {
            let Some(mut lent) = self.decode_frame_lent(frame, place) else {
                return;
            };
            if let Some(own) = own {
                match &mut answer {
                    OwnAnswer::Return => {}
                    OwnAnswer::Visit(visit) => {
                        if self.take_if_own_response(&lent, own) {
                            lent.with_attachments(frame, |attachments| {
                                visit(ResponseRef::new(lent.envelope(), attachments));
                            });
                            lent.release_data();
                            self.freed();
                            return;
                        }
                    }
                    OwnAnswer::Take(place) => {
                        if self.take_if_own_response(&lent, own) {
                            let attachments = lent.attachments_owned(frame);
                            **place =
                                Some(Response::from_envelope(lent.into_envelope(), attachments));
                            self.freed();
                            return;
                        }
                    }
                }
            }
            let attachments = lent.attachments_owned(frame);
            decoded = Some((lent.into_envelope(), attachments));
        }) {
            Ok(()) => {}
            Err(TransportError::Timeout) => return Err(TransportError::Timeout),
            Err(TransportError::FrameTooLarge { size, max }) => {
                // The answer it carried is lost and cannot be attributed: fail what waits
                // rather than let it hang.
                self.fail_pending_with(|| {
                    CallError::Transport(TransportError::FrameTooLarge { size, max })
                });
                return Ok(None);
            }
            Err(e) => {
                let why = match &e {
                    TransportError::Disconnected => "worker closed the channel".to_owned(),
                    other => format!("link failed: {other}"),
                };
                self.fail_all(&why);
                return Err(e);
            }
        }
        match decoded {
            Some((env, attachments)) => Ok(self.route(env, attachments, own)),
            None => Ok(None),
        }
    }

    /// The pending-table key of the request `env` answers, if it names one of ours (a
    /// legacy answer without an id answers the one request in flight).
    pub(super) fn key_of(&self, env: &Envelope, st: &State) -> Option<u64> {
        self.key_for(env.request_id.as_deref(), st)
    }

    /// [`key_of`](Self::key_of) for an answer that names `request_id` (or none).
    pub(super) fn key_for(&self, request_id: Option<&str>, st: &State) -> Option<u64> {
        match (request_id, self.dialect) {
            (Some(id), _) => self.ids.number_of(id),
            (None, Dialect::Legacy) => st.pending.keys().next().copied(),
            (None, Dialect::Ferry) => None,
        }
    }

    /// When `env` is the successful answer to `own`'s request, takes that request out of
    /// the pending table (as [`route`](Self::route) does for a terminal message) and
    /// returns `true`.
    fn take_if_own_response(&self, lent: &Lent<'_>, own: &Arc<Slot>) -> bool {
        let env = lent.envelope();
        if env.kind != MessageType::Response {
            return false;
        }
        let mut st = self.state.lock();
        // A compact frame carries the key itself: no text to parse back.
        let Some(key) = lent.id_number().or_else(|| self.key_of(env, &st)) else {
            return false;
        };
        if !st.pending.get(&key).is_some_and(|s| Arc::ptr_eq(s, own)) {
            return false;
        }
        st.forget(key);
        st.pending.remove(&key);
        true
    }

    pub(super) fn fail_pending_with(&self, make: impl Fn() -> CallError) {
        let slots: Vec<Arc<Slot>> = {
            let mut st = self.state.lock();
            st.release_held();
            st.pending.drain().map(|(_, s)| s).collect()
        };
        for slot in &slots {
            slot.deliver(Incoming::Done(Err(make())));
        }
        if !slots.is_empty() {
            self.freed();
        }
    }

    /// Delivers `env` to the slot of the request it names, or returns it when that slot
    /// is `own`.
    pub(super) fn route(
        &self,
        env: Envelope,
        attachments: Vec<Vec<u8>>,
        own: Option<&Arc<Slot>>,
    ) -> Option<Incoming> {
        let terminal = env.is_terminal();
        let slot = {
            let mut st = self.state.lock();
            if env.request_id.is_none() && self.dialect == Dialect::Ferry {
                drop(st);
                if terminal {
                    // An answer that names no request answers one that can no longer be
                    // told: fail what waits rather than let the one it was for hang.
                    tracing::warn!(worker = %self.label, kind = ?env.kind, "answer without request_id");
                    let kind = env.kind;
                    self.fail_pending_with(|| {
                        CallError::Protocol(ProtocolError::MissingField {
                            kind,
                            field: "request_id",
                        })
                    });
                } else {
                    tracing::debug!(worker = %self.label, event = ?env.event_name, "worker-wide message");
                }
                return None;
            }
            // `None`: not an id this connection made, so no request of ours can match it.
            let key = self.key_of(&env, &st);
            let slot = key.and_then(|key| {
                if terminal {
                    st.forget(key);
                    st.pending.remove(&key)
                } else {
                    st.pending.get(&key).cloned()
                }
            });
            if slot.is_none() {
                drop(st);
                tracing::debug!(worker = %self.label, request = ?env.request_id, "message for a request no longer pending");
            }
            slot
        };
        let slot = slot?;
        let item = match env.kind {
            MessageType::Event => Incoming::Event(env),
            MessageType::Response => Incoming::Done(Ok(Response::from_envelope(env, attachments))),
            MessageType::Error => Incoming::Done(Err(match env.error {
                Some(body) => CallError::Remote(body),
                None => CallError::Remote(ErrorBody::new(
                    ErrorCode::Protocol,
                    "error message without `error`",
                )),
            })),
            other => {
                tracing::warn!(worker = %self.label, kind = ?other, "worker sent a message only hosts send");
                return None;
            }
        };
        let mine = own.is_some_and(|own| Arc::ptr_eq(own, &slot));
        let item = if mine {
            Some(item)
        } else {
            slot.deliver(item);
            None
        };
        if terminal {
            self.freed();
        }
        item
    }

    /// Takes the link to read as leader, if no one else reads it; `own`: the key of the
    /// leader's request (`None` for the reader thread). See [`Leader`].
    pub(super) fn try_lead(&self, own: Option<u64>) -> Option<Leader<'_>> {
        let rx = self.rx.try_lock()?;
        Some(Leader {
            rx,
            _step_down: StepDown { conn: self, own },
        })
    }

    /// The leader is done reading: let a follower (or the reader thread) take over.
    fn step_down(&self, own: Option<u64>) {
        let (slots, reader_needed) = {
            let mut st = self.state.lock();
            st.reader_nudges += 1;
            let slots: Vec<Arc<Slot>> = st
                .pending
                .iter()
                .filter(|(key, _)| Some(**key) != own)
                .map(|(_, s)| s.clone())
                .collect();
            (slots, !st.reader_reads_for.is_empty())
        };
        for slot in slots {
            slot.nudge();
        }
        // Why only then: with no async waiter the reader thread would wake, find nothing
        // to do and sleep again, a context switch per call. The nudge count still moved,
        // so a reader waiting for it goes on at the next notification.
        if reader_needed {
            self.state_cv.notify_all();
        }
    }

    pub(super) fn reader_loop(self: Arc<Self>) {
        loop {
            let seen = {
                let mut st = self.state.lock();
                while st.reader_reads_for.is_empty() && !st.closing {
                    self.state_cv.wait(&mut st);
                }
                if st.closing {
                    return;
                }
                st.reader_nudges
            };
            if let Some(mut rx) = self.try_lead(None) {
                loop {
                    {
                        let st = self.state.lock();
                        if st.reader_reads_for.is_empty() || st.closing || st.broken.is_some() {
                            break;
                        }
                    }
                    let until = Some(Instant::now() + READER_SLICE);
                    match self.read_one(&mut rx, until, None, OwnAnswer::Return) {
                        Ok(_) | Err(TransportError::Timeout) => {}
                        Err(_) => break,
                    }
                }
                drop(rx);
                if self.state.lock().broken.is_some() {
                    // Nothing more can arrive; wait until async callers drain or close.
                    let mut st = self.state.lock();
                    while !st.closing && !st.reader_reads_for.is_empty() {
                        self.state_cv.wait_for(&mut st, READER_SLICE);
                    }
                    if st.closing {
                        return;
                    }
                }
            } else {
                let mut st = self.state.lock();
                while st.reader_nudges == seen && !st.closing && !st.reader_reads_for.is_empty() {
                    self.state_cv.wait(&mut st);
                }
            }
        }
    }
}

/// The link, held by the thread that reads it for everyone (a caller or the reader thread);
/// derefs to its receiving half. Dropping it lets go of the link and then steps down, so
/// followers and the reader thread are nudged to take over; being a guard, it does so also
/// when the leader unwinds (a caller's `on_event` or in-place visitor panicked), and no one
/// is left waiting for a nudge that would never come.
pub(super) struct Leader<'a> {
    // Fields drop in this order: the link is let go of before the step-down, so a nudged
    // follower finds it free.
    rx: MutexGuard<'a, RxHalf>,
    _step_down: StepDown<'a>,
}

impl std::ops::Deref for Leader<'_> {
    type Target = RxHalf;
    fn deref(&self) -> &RxHalf {
        &self.rx
    }
}

impl std::ops::DerefMut for Leader<'_> {
    fn deref_mut(&mut self) -> &mut RxHalf {
        &mut self.rx
    }
}

/// Steps down when dropped (after the [`Leader`]'s link guard).
struct StepDown<'a> {
    conn: &'a Connection,
    own: Option<u64>,
}

impl Drop for StepDown<'_> {
    fn drop(&mut self) {
        self.conn.step_down(self.own);
    }
}
