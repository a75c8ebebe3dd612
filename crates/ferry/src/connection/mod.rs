//! Many requests in flight over one worker link: correlation by id, event streams per
//! request, deadlines, cancellation.
//!
//! # Who reads the link
//!
//! There is no dedicated reader while only synchronous callers wait. A caller waiting for
//! its answer takes the receive half if it is free and becomes the *leader*: it reads
//! frames, delivers other requests' messages to their slots, and stops when its own
//! answer arrives or its deadline passes. When it steps down it nudges the waiting
//! *followers*, one of which takes over. A lone caller on an idle worker therefore sends
//! and receives on its own thread, with no thread hop.
//!
//! Async callers cannot block their executor thread on a read, so while any async caller
//! waits, a reader thread started on first use takes the leader's part for them (a sync
//! caller arriving then becomes a follower). An async caller pays one wake-up.
//!
//! # Exactly one terminal answer
//!
//! Each request has one slot; the response or error that names it, or the failure of the
//! whole link (`worker_crashed` to every pending request), is delivered to it once and the
//! slot leaves the pending table. A caller that stops waiting (deadline, drop) leaves its
//! slot pending until the worker answers, so [`Connection::in_flight`] counts what the
//! worker is really busy with.

mod call;
mod call_error;
mod coalesce;
mod response;
mod slot;
mod spawn_error;

pub(crate) use call::envelope_events;
pub use call::{Call, EventHandler};
pub use call_error::CallError;
pub use response::Response;
pub use spawn_error::SpawnError;

pub use coalesce::{Coalescing, DEFAULT_EVENT_CAPACITY};
pub use slot::Incoming;
use slot::Slot;

use crate::codec::{with_parts, Codec, CodecError, EnvelopeRef, Framing};
use crate::protocol::{
    legacy, Dialect, Envelope, ErrorBody, ErrorCode, IdGenerator, MessageType, ProtocolError,
    ReadyInfo, PROTOCOL_VERSION,
};
use crate::transport::{FrameReceiver, FrameSender, Link, TransportError};
use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the async reader reads before re-checking whether anyone still waits.
const READER_SLICE: Duration = Duration::from_millis(50);

struct TxHalf {
    sender: Box<dyn FrameSender>,
    out: Vec<u8>,
}

struct RxHalf {
    receiver: Box<dyn FrameReceiver>,
    buf: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Requests waiting for their answer, by the number of their id (`r-<n>`).
    pending: HashMap<u64, Arc<Slot>, BuildHasherDefault<IdHasher>>,
    async_waiters: usize,
    /// Why the link is unusable, once it is.
    broken: Option<String>,
    reader_started: bool,
    reader_nudges: u64,
    closing: bool,
}

/// Hashes the pending table's keys: numbers this connection handed out in sequence, so a
/// multiplication spreads them well enough, at a fraction of SipHash's cost. (Only the
/// connection inserts keys; a worker's answers only look them up.)
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Called whenever a request leaves the pending table (its worker has room again).
pub type FreedHook = Arc<dyn Fn() + Send + Sync>;

/// One multiplexed link to a worker.
pub struct Connection {
    label: String,
    codec: Codec,
    dialect: Dialect,
    ids: IdGenerator,
    tx: Mutex<TxHalf>,
    rx: Mutex<RxHalf>,
    state: Mutex<State>,
    state_cv: Condvar,
    skipped: AtomicU64,
    on_freed: Option<FreedHook>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("label", &self.label)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps a connected link. `label` tags log lines; `on_freed` runs whenever a request
    /// completes or fails (the pool uses it to hand the worker to a queued caller).
    pub fn new(
        link: Link,
        codec: Codec,
        dialect: Dialect,
        label: impl Into<String>,
        on_freed: Option<FreedHook>,
    ) -> Arc<Self> {
        Arc::new(Connection {
            label: label.into(),
            codec,
            dialect,
            ids: IdGenerator::new("r"),
            tx: Mutex::new(TxHalf {
                sender: link.sender,
                out: Vec::new(),
            }),
            rx: Mutex::new(RxHalf {
                receiver: link.receiver,
                buf: Vec::new(),
            }),
            state: Mutex::new(State::default()),
            state_cv: Condvar::new(),
            skipped: AtomicU64::new(0),
            on_freed,
        })
    }

    /// The dialect the worker speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Requests sent and not yet answered (abandoned ones included: the worker is still
    /// busy with them).
    pub fn in_flight(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// How long the oldest abandoned request (cancelled or timed out, still unanswered by
    /// the worker) has been waiting for its answer.
    pub fn oldest_abandoned(&self) -> Option<Duration> {
        let st = self.state.lock();
        st.pending
            .values()
            .filter_map(|s| s.abandoned_since())
            .min()
            .map(|since| since.elapsed())
    }

    /// Why the link is unusable, if it is.
    pub fn broken(&self) -> Option<String> {
        self.state.lock().broken.clone()
    }

    /// Non-protocol frames (banners, stray prints) skipped so far.
    pub fn skipped_frames(&self) -> u64 {
        // Statistics only: no other memory is published through this counter.
        self.skipped.load(Ordering::Relaxed)
    }

    /// Waits for the worker's `ready` event (ferry dialect), reading on this thread.
    pub fn handshake(
        &self,
        deadline: Instant,
        startup_timeout: Duration,
    ) -> Result<ReadyInfo, SpawnError> {
        let mut guard = self.rx.lock();
        let rx = &mut *guard;
        let env = loop {
            match rx.receiver.recv(&mut rx.buf, Some(deadline)) {
                Ok(()) => {}
                Err(TransportError::Timeout) => {
                    return Err(SpawnError::StartupTimeout(startup_timeout))
                }
                Err(TransportError::Disconnected) => {
                    self.mark_broken("worker exited before ready");
                    return Err(SpawnError::ExitedBeforeReady {
                        status: "channel closed".into(),
                    });
                }
                Err(e) => return Err(SpawnError::Transport(e)),
            }
            match self.codec.decode(&rx.buf) {
                Ok(decoded) => break decoded.envelope,
                Err(e) if self.is_noise(&e) => self.skip(&rx.buf, &e),
                Err(e) => return Err(e.into()),
            }
        };
        if !env.is_ready_event() {
            return Err(ProtocolError::NotReady(env.kind).into());
        }
        let info: ReadyInfo = serde_json::from_value(env.data.unwrap_or(Value::Null))
            .map_err(|e| ProtocolError::InvalidReady(e.to_string()))?;
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                expected: PROTOCOL_VERSION,
                got: info.protocol_version,
            }
            .into());
        }
        if !info.codecs.iter().any(|c| c == self.codec.kind().as_str()) {
            return Err(ProtocolError::InvalidReady(format!(
                "worker does not speak codec {} (it lists {:?})",
                self.codec.kind(),
                info.codecs
            ))
            .into());
        }
        Ok(info)
    }

    /// Sends `request` (a fresh `message_id` is set) and returns the handle to wait on.
    pub fn start(
        self: &Arc<Self>,
        request: Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.reserve()?.send(&request, attachments, deadline)
    }

    /// Like [`start`](Self::start), with `fill` supplying the fields the request leaves
    /// unset (on the wire only: nothing is allocated for them).
    pub(crate) fn start_filled(
        self: &Arc<Self>,
        request: Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.reserve()?
            .send_filled(&request, fill, attachments, deadline)
    }

    /// Claims a place for one request (it counts in [`in_flight`](Self::in_flight) from
    /// now), to be sent with [`Reservation::send`]. Dropping the reservation unsent
    /// releases the place.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, CallError> {
        let mut id = String::with_capacity(24);
        let key = self.ids.next_id_into(&mut id);
        let slot = Arc::new(Slot::default());
        {
            let mut st = self.state.lock();
            if let Some(why) = &st.broken {
                return Err(CallError::WorkerCrashed {
                    status: why.clone(),
                });
            }
            // Registered before sending: the answer may arrive before `send` returns.
            st.pending.insert(key, slot.clone());
        }
        Ok(Reservation {
            claim: Some(Claim {
                conn: self.clone(),
                id,
                key,
                slot,
            }),
        })
    }

    /// Like [`start`](Self::start), for a caller that will wait with
    /// [`Pending::next_async`]: the reader thread reads on its behalf.
    pub fn start_async(
        self: &Arc<Self>,
        request: Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.reserve()?.send_async(&request, attachments, deadline)
    }

    /// Counts one more async waiter and makes sure the reader thread runs.
    fn register_async(self: &Arc<Self>) -> Result<(), CallError> {
        {
            let mut st = self.state.lock();
            st.async_waiters += 1;
            if !st.reader_started {
                st.reader_started = true;
                let conn = self.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("reader-{}", self.label))
                    .spawn(move || conn.reader_loop());
                if spawned.is_err() {
                    st.reader_started = false;
                    st.async_waiters -= 1;
                    return Err(CallError::Transport(TransportError::Internal(
                        "cannot start reader thread".into(),
                    )));
                }
            }
        }
        self.state_cv.notify_all();
        Ok(())
    }

    /// Sends a `cancel` for request `id` (best effort; the legacy dialect has none).
    pub fn send_cancel(&self, id: &str) {
        if self.dialect == Dialect::Legacy {
            return;
        }
        let cancel = Envelope::cancel(self.ids.next_id(), id);
        let _ = self.send_request(&EnvelopeRef::from(&cancel), &[]);
    }

    /// Fails every pending request with `worker_crashed` and refuses new ones; the pool
    /// calls this when it kills the worker.
    pub fn fail_all(&self, why: &str) {
        let slots: Vec<Arc<Slot>> = {
            let mut st = self.state.lock();
            if st.broken.is_none() {
                st.broken = Some(why.to_owned());
            }
            st.pending.drain().map(|(_, s)| s).collect()
        };
        for slot in &slots {
            slot.deliver(Incoming::Done(Err(CallError::WorkerCrashed {
                status: why.to_owned(),
            })));
        }
        if !slots.is_empty() {
            self.freed();
        }
        self.state_cv.notify_all();
    }

    /// Stops the reader thread (if any). Pending requests are failed.
    pub fn close(&self) {
        self.fail_all("connection closed");
        self.state.lock().closing = true;
        self.state_cv.notify_all();
    }

    /// Closes the sending half (the worker sees end of input).
    pub fn close_sender(&self) {
        self.tx.lock().sender = Box::new(ClosedSender);
    }

    fn mark_broken(&self, why: &str) {
        let mut st = self.state.lock();
        if st.broken.is_none() {
            st.broken = Some(why.to_owned());
        }
    }

    fn freed(&self) {
        if let Some(hook) = &self.on_freed {
            hook();
        }
    }

    fn async_done(&self) {
        let mut st = self.state.lock();
        st.async_waiters = st.async_waiters.saturating_sub(1);
    }

    fn send_request(&self, env: &EnvelopeRef<'_>, attachments: &[&[u8]]) -> Result<(), CallError> {
        let mut tx = self.tx.lock();
        let TxHalf { sender, out } = &mut *tx;
        let result = match self.dialect {
            Dialect::Ferry => {
                self.codec.encode_ref(env, attachments, out)?;
                let raw = match self.codec.framing() {
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

    fn is_noise(&self, e: &CodecError) -> bool {
        self.codec.framing() == Framing::Lines
            && matches!(e, CodecError::NotUtf8 | CodecError::Header { .. })
    }

    fn skip(&self, frame: &[u8], e: &dyn std::fmt::Display) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let preview = String::from_utf8_lossy(&frame[..frame.len().min(200)]).into_owned();
        tracing::warn!(worker = %self.label, error = %e, line = %preview, "skipping non-protocol output");
    }

    /// Reads one frame as leader and routes it; what is for `own` (the leader's slot) is
    /// returned instead of delivered. Link failures are returned after every pending
    /// request (`own` included) has been failed.
    fn read_one(
        &self,
        rx: &mut RxHalf,
        deadline: Option<Instant>,
        own: Option<&Arc<Slot>>,
    ) -> Result<Option<Incoming>, TransportError> {
        match rx.receiver.recv(&mut rx.buf, deadline) {
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
        let env = match self.dialect {
            Dialect::Ferry => match self.codec.decode(&rx.buf) {
                Ok(decoded) => {
                    let attachments = if decoded.attachment_count() > 0 {
                        decoded.attachments_owned(&rx.buf)
                    } else {
                        Vec::new()
                    };
                    (decoded.envelope, attachments)
                }
                Err(e @ CodecError::Protocol(ProtocolError::VersionMismatch { got, .. })) => {
                    // Every caller hears the version the worker really sent.
                    self.fail_pending_with(|| {
                        CallError::Protocol(ProtocolError::VersionMismatch {
                            expected: PROTOCOL_VERSION,
                            got,
                        })
                    });
                    tracing::error!(worker = %self.label, error = %e, "worker switched protocol version");
                    return Ok(None);
                }
                Err(e) => {
                    self.skip(&rx.buf, &e);
                    return Ok(None);
                }
            },
            Dialect::Legacy => {
                let decoded = serde_json::from_slice::<Value>(&rx.buf)
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        legacy::decode_answer(v, self.ids.next_id()).map_err(|e| e.to_string())
                    });
                match decoded {
                    Ok(env) => (env, Vec::new()),
                    Err(e) => {
                        self.skip(&rx.buf, &e);
                        return Ok(None);
                    }
                }
            }
        };
        Ok(self.route(env.0, env.1, own))
    }

    fn fail_pending_with(&self, make: impl Fn() -> CallError) {
        let slots: Vec<Arc<Slot>> = self.state.lock().pending.drain().map(|(_, s)| s).collect();
        for slot in &slots {
            slot.deliver(Incoming::Done(Err(make())));
        }
        if !slots.is_empty() {
            self.freed();
        }
    }

    /// Delivers `env` to the slot of the request it names, or returns it when that slot
    /// is `own`.
    fn route(
        &self,
        mut env: Envelope,
        attachments: Vec<Vec<u8>>,
        own: Option<&Arc<Slot>>,
    ) -> Option<Incoming> {
        let terminal = env.is_terminal();
        let slot = {
            let mut st = self.state.lock();
            let key = match (env.request_id.as_deref(), self.dialect) {
                // Not an id this connection made: no request of ours can match it.
                (Some(id), _) => self.ids.number_of(id),
                // A legacy answer may omit request_id: it answers the one request in flight.
                (None, Dialect::Legacy) => st.pending.keys().next().copied(),
                (None, Dialect::Ferry) => {
                    drop(st);
                    tracing::debug!(worker = %self.label, event = ?env.event_name, "worker-wide message");
                    return None;
                }
            };
            let slot = key.and_then(|key| {
                if terminal {
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
            MessageType::Response => Incoming::Done(Ok(Response {
                // Moved, not cloned: a large `data` is not copied a second time.
                data: env.data.take().unwrap_or(Value::Null),
                envelope: env,
                attachments,
            })),
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

    /// The leader is done reading: let a follower (or the reader thread) take over.
    fn step_down(&self, own: Option<u64>) {
        let slots: Vec<Arc<Slot>> = {
            let mut st = self.state.lock();
            st.reader_nudges += 1;
            st.pending
                .iter()
                .filter(|(key, _)| Some(**key) != own)
                .map(|(_, s)| s.clone())
                .collect()
        };
        for slot in slots {
            slot.nudge();
        }
        self.state_cv.notify_all();
    }

    fn reader_loop(self: Arc<Self>) {
        loop {
            let seen = {
                let mut st = self.state.lock();
                while st.async_waiters == 0 && !st.closing {
                    self.state_cv.wait(&mut st);
                }
                if st.closing {
                    return;
                }
                st.reader_nudges
            };
            if let Some(mut rx) = self.rx.try_lock() {
                loop {
                    {
                        let st = self.state.lock();
                        if st.async_waiters == 0 || st.closing || st.broken.is_some() {
                            break;
                        }
                    }
                    match self.read_one(&mut rx, Some(Instant::now() + READER_SLICE), None) {
                        Ok(_) | Err(TransportError::Timeout) => {}
                        Err(_) => break,
                    }
                }
                drop(rx);
                self.step_down(None);
                if self.state.lock().broken.is_some() {
                    // Nothing more can arrive; wait until async callers drain or close.
                    let mut st = self.state.lock();
                    while !st.closing && st.async_waiters > 0 {
                        self.state_cv.wait_for(&mut st, READER_SLICE);
                    }
                    if st.closing {
                        return;
                    }
                }
            } else {
                let mut st = self.state.lock();
                while st.reader_nudges == seen && !st.closing && st.async_waiters > 0 {
                    self.state_cv.wait(&mut st);
                }
            }
        }
    }
}

/// What a sender puts in the fields a request leaves unset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fill<'a> {
    /// `timestamp`, when the request has none.
    pub timestamp: Option<&'a str>,
    /// `worker_type`, when the request has none.
    pub worker_type: Option<&'a str>,
}

/// A place claimed on a connection for one request; see [`Connection::reserve`].
pub struct Reservation {
    /// Taken when sent; still here on drop: the place is released.
    claim: Option<Claim>,
}

struct Claim {
    conn: Arc<Connection>,
    id: String,
    key: u64,
    slot: Arc<Slot>,
}

impl Claim {
    fn release(&self) {
        self.conn.state.lock().pending.remove(&self.key);
        self.conn.freed();
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.claim.as_ref().map(|c| c.id.as_str()))
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// Sends `request` under the reserved id and returns the handle to wait on.
    pub fn send(
        self,
        request: &Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.send_filled(request, Fill::default(), attachments, deadline)
    }

    /// [`send`](Self::send), with `fill` supplying the fields the request leaves unset (on
    /// the wire only).
    pub(crate) fn send_filled(
        mut self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        let Some(claim) = self.claim.take() else {
            unreachable!("a reservation is sent once: send takes it by value");
        };
        // Sent under the reserved id from a view: the envelope is not rewritten.
        let mut view = EnvelopeRef::from(request);
        view.message_id = &claim.id;
        view.kind = MessageType::Request;
        view.timestamp = view.timestamp.or(fill.timestamp);
        view.worker_type = view.worker_type.or(fill.worker_type);
        if let Err(e) = claim.conn.send_request(&view, attachments) {
            claim.release();
            if let CallError::WorkerCrashed { status } = &e {
                claim.conn.fail_all(status);
            }
            return Err(e);
        }
        let Claim {
            conn,
            id,
            key,
            slot,
        } = claim;
        Ok(Pending {
            conn,
            id,
            key,
            slot,
            window: deadline.map(|d| d.saturating_duration_since(Instant::now())),
            deadline,
            finished: false,
            is_async: false,
        })
    }

    /// Like [`send`](Self::send), for a caller that will wait with
    /// [`Pending::next_async`]: the reader thread reads on its behalf.
    pub fn send_async(
        self,
        request: &Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.send_async_filled(request, Fill::default(), attachments, deadline)
    }

    /// [`send_async`](Self::send_async), with `fill` as in `send_filled`.
    pub(crate) fn send_async_filled(
        self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        let Some(conn) = self.claim.as_ref().map(|c| c.conn.clone()) else {
            unreachable!("a reservation is sent once: send_async takes it by value");
        };
        conn.register_async()?;
        match self.send_filled(request, fill, attachments, deadline) {
            Ok(mut p) => {
                p.is_async = true;
                Ok(p)
            }
            Err(e) => {
                conn.async_done();
                Err(e)
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            claim.release();
        }
    }
}

/// Stands in for a sender that was closed on purpose.
struct ClosedSender;

impl FrameSender for ClosedSender {
    fn send(&mut self, _parts: &[&[u8]]) -> Result<(), TransportError> {
        Err(TransportError::Disconnected)
    }
}

/// One request in flight: wait for its events and its answer.
pub struct Pending {
    conn: Arc<Connection>,
    id: String,
    /// The number of `id`: the request's key in the pending table.
    key: u64,
    slot: Arc<Slot>,
    deadline: Option<Instant>,
    /// How long the caller gave the request when it was sent (what a timeout reports).
    window: Option<Duration>,
    finished: bool,
    is_async: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The request's `message_id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits on this thread for the answer; `on_event` sees each event as it arrives.
    /// Reads the link itself when no one else does (no thread hop).
    pub fn wait(mut self, mut on_event: impl FnMut(&Envelope)) -> Result<Response, CallError> {
        loop {
            // What has arrived, or (in the same look) the nudge count to wait past.
            let seen = match self.slot.pop_or_nudges() {
                Ok(Incoming::Event(e)) => {
                    on_event(&e);
                    continue;
                }
                Ok(Incoming::Done(result)) => {
                    self.finished = true;
                    return result;
                }
                Err(seen) => seen,
            };
            // `Some(outcome)` when this caller led: its answer, or `None` on its deadline.
            let led = {
                let conn = &*self.conn;
                conn.rx.try_lock().map(|mut rx| {
                    // Frames for this request come back from `read_one` directly; the slot
                    // holds what other threads delivered (the previous leader, a failure of
                    // the whole link), looked at with one load before each read.
                    let outcome = loop {
                        if self.slot.has_items() {
                            if let Some(item) = self.slot.pop() {
                                match item {
                                    Incoming::Event(e) => on_event(&e),
                                    Incoming::Done(result) => break Some(result),
                                }
                                continue;
                            }
                        }
                        match conn.read_one(&mut rx, self.deadline, Some(&self.slot)) {
                            Ok(Some(Incoming::Event(e))) => on_event(&e),
                            Ok(Some(Incoming::Done(result))) => break Some(result),
                            Ok(None) => {}
                            // Every pending slot, ours included, now holds its failure.
                            Err(TransportError::Timeout) => break None,
                            Err(_) => {}
                        }
                    };
                    drop(rx);
                    conn.step_down(Some(self.key));
                    outcome
                })
            };
            match led {
                Some(Some(result)) => {
                    self.finished = true;
                    return result;
                }
                Some(None) => return Err(self.time_out()),
                None => {
                    if !self.slot.wait(seen, self.deadline) {
                        return Err(self.time_out());
                    }
                }
            }
        }
    }

    /// The next event or the answer, for async callers (use a connection's
    /// [`start_async`](Connection::start_async)). Returns `None` after the answer.
    pub fn next_async(&mut self) -> impl Future<Output = Option<Incoming>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.finished {
                return std::task::Poll::Ready(None);
            }
            match self.slot.poll_pop(cx.waker()) {
                Some(item) => {
                    if matches!(item, Incoming::Done(_)) {
                        self.finish_async();
                    }
                    std::task::Poll::Ready(Some(item))
                }
                None => std::task::Poll::Pending,
            }
        })
    }

    /// The answer if it has arrived, without blocking and without reading the link (use
    /// with [`Connection::start_async`], whose reader thread reads). Events are dropped.
    pub fn poll_done(&mut self) -> Option<Result<Response, CallError>> {
        while let Some(item) = self.slot.pop() {
            if let Incoming::Done(result) = item {
                self.finish_async();
                return Some(result);
            }
        }
        None
    }

    /// Stops waiting: sends a `cancel` and abandons the slot (the worker's late answer is
    /// discarded when it comes).
    pub fn cancel(mut self) {
        self.abandon();
    }

    fn finish_async(&mut self) {
        self.finished = true;
        if self.is_async {
            self.is_async = false;
            self.conn.async_done();
        }
    }

    fn abandon(&mut self) {
        if !self.finished {
            self.finished = true;
            self.slot.abandon();
            self.conn.send_cancel(&self.id);
        }
        if self.is_async {
            self.is_async = false;
            self.conn.async_done();
        }
    }

    fn time_out(&mut self) -> CallError {
        // The window the caller gave, not what is left of it (which is zero by now).
        let limit = self.window.unwrap_or_default();
        self.abandon();
        CallError::Timeout(limit)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecKind;
    use crate::transport::memory;

    #[test]
    fn fill_supplies_only_the_fields_a_request_leaves_unset() {
        let (host, mut worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "t", None);
        let fill = Fill {
            timestamp: Some("2026-11-22T08:00:00.000Z"),
            worker_type: Some("echo"),
        };
        let bare = Envelope::request("", "op", Value::Null);
        let mut own = bare.clone();
        own.timestamp = Some("mine".into());
        own.worker_type = Some("sdxl".into());
        let mut buf = Vec::new();
        for (request, timestamp, worker_type) in [
            (bare, "2026-11-22T08:00:00.000Z", "echo"),
            (own, "mine", "sdxl"),
        ] {
            let pending = conn.start_filled(request, fill, &[b"x"], None).unwrap();
            worker.receiver.recv(&mut buf, None).unwrap();
            let sent = codec.decode(&buf).unwrap().envelope;
            assert_eq!(sent.message_id, pending.id());
            assert_eq!(sent.timestamp.as_deref(), Some(timestamp));
            assert_eq!(sent.worker_type.as_deref(), Some(worker_type));
            assert_eq!(sent.attachments.len(), 1);
            pending.cancel();
            worker.receiver.recv(&mut buf, None).unwrap();
            assert_eq!(
                codec.decode(&buf).unwrap().envelope.kind,
                MessageType::Cancel
            );
        }
    }
}
