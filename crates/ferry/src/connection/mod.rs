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
//! worker is really busy with. An abandoned async request keeps the reader thread reading
//! until then, so that answer is read (and the place freed) with no other caller waiting.

mod call;
mod call_error;
mod coalesce;
mod dialect;
mod pending;
mod reader;
mod reservation;
mod response;
mod slot;
mod spawn_error;

pub(crate) use call::envelope_events;
pub use call::{Call, EventHandler};
pub use pending::Pending;
use reservation::Claim;
pub(crate) use reservation::Fill;
pub use reservation::Reservation;

pub use call_error::CallError;
pub use response::{Response, ResponseRef};
pub use spawn_error::SpawnError;

pub use coalesce::{Coalescing, DEFAULT_EVENT_CAPACITY};
pub use slot::Incoming;
use slot::Slot;

use crate::codec::{Codec, CodecKind, CompactWire, DecodedFrame, EnvelopeRef, Framing};
use crate::protocol::{
    Dialect, Envelope, FrameHeader, IdGenerator, ProtocolError, ReadyInfo, RequestId, StdioFraming,
    PROTOCOL_VERSION,
};
use crate::transport::{FrameReceiver, FrameSender, Link, TransportError};
use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
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
    /// Where each frame is decoded, reusing the texts and lists of the one before.
    place: DecodedFrame,
}

#[derive(Default)]
struct State {
    /// Requests waiting for their answer, by the number of their id (`r-<n>`).
    pending: HashMap<u64, Arc<Slot>, BuildHasherDefault<IdHasher>>,
    /// The async requests the reader thread reads for, until their final answer is routed:
    /// those of async callers (from the send, or from when a caller that read the link
    /// itself first stopped), abandoned ones included (their future dropped, or timed out),
    /// so that the worker's answer to the `cancel` is read and the request leaves the table.
    /// The reader thread reads while there are any.
    reader_reads_for: HashSet<u64, BuildHasherDefault<IdHasher>>,
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

/// What a host offered the worker a connection talks to, for the handshake to check the
/// worker's `ready` against (docs/protocol.md, "Compact frames" and "Binary frames on
/// stdio").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offer {
    /// The frame header offered in `FERRY_FRAME_HEADER`.
    pub frame_header: FrameHeader,
    /// On stdio: the codec offered in `FERRY_STDIO_CODEC` for length-prefixed frames after
    /// `ready` (`FERRY_STDIO_FRAMING=length_prefixed`); `None`: no offer.
    pub stdio_codec: Option<CodecKind>,
}

impl Offer {
    /// An offer of `frame_header` and, when `stdio_codec` is set, of length-prefixed
    /// stdio frames in that codec.
    pub fn new(frame_header: FrameHeader, stdio_codec: Option<CodecKind>) -> Self {
        Offer {
            frame_header,
            stdio_codec,
        }
    }
}

/// Called whenever a request leaves the pending table (its worker has room again).
pub type FreedHook = Arc<dyn Fn() + Send + Sync>;

/// One multiplexed link to a worker.
pub struct Connection {
    label: String,
    /// The codec of the handshake, and of every frame unless the link switched.
    codec: Codec,
    /// The frame header offered to the worker (`FERRY_FRAME_HEADER`).
    offered: FrameHeader,
    /// The codec offered for length-prefixed frames after `ready` on stdio
    /// (`FERRY_STDIO_CODEC`), if any.
    offered_stdio: Option<CodecKind>,
    /// The codec of every frame after `ready`, once the worker accepted the stdio offer
    /// and the link switched; set before any request.
    switched: OnceLock<Codec>,
    /// The compact wire, once the worker's `ready` accepted it; set before any request.
    compact: OnceLock<CompactWire>,
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
    /// completes or fails (the pool uses it to hand the worker to a queued caller). The
    /// link keeps envelope frames; see [`with_frame_header`](Self::with_frame_header).
    pub fn new(
        link: Link,
        codec: Codec,
        dialect: Dialect,
        label: impl Into<String>,
        on_freed: Option<FreedHook>,
    ) -> Arc<Self> {
        Self::with_frame_header(link, codec, dialect, label, on_freed, FrameHeader::Envelope)
    }

    /// [`new`](Self::new), for a worker that was offered `offered` in
    /// `FERRY_FRAME_HEADER`: if its `ready` accepts [`FrameHeader::Compact`], the link
    /// switches to compact frames (docs/protocol.md, "Compact frames").
    pub fn with_frame_header(
        link: Link,
        codec: Codec,
        dialect: Dialect,
        label: impl Into<String>,
        on_freed: Option<FreedHook>,
        offered: FrameHeader,
    ) -> Arc<Self> {
        Self::with_offer(
            link,
            codec,
            dialect,
            label,
            on_freed,
            Offer {
                frame_header: offered,
                stdio_codec: None,
            },
        )
    }

    /// [`new`](Self::new), for a worker that was offered what `offer` says
    /// (`FERRY_FRAME_HEADER`, `FERRY_STDIO_FRAMING` and `FERRY_STDIO_CODEC`): the
    /// handshake switches the link to what the worker's `ready` accepts.
    pub fn with_offer(
        link: Link,
        codec: Codec,
        dialect: Dialect,
        label: impl Into<String>,
        on_freed: Option<FreedHook>,
        offer: Offer,
    ) -> Arc<Self> {
        Arc::new(Connection {
            label: label.into(),
            codec,
            offered: offer.frame_header,
            offered_stdio: offer.stdio_codec,
            switched: OnceLock::new(),
            compact: OnceLock::new(),
            dialect,
            ids: IdGenerator::new(RequestId::PREFIX),
            tx: Mutex::new(TxHalf {
                sender: link.sender,
                out: Vec::new(),
            }),
            rx: Mutex::new(RxHalf {
                receiver: link.receiver,
                buf: Vec::new(),
                place: DecodedFrame::default(),
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
        self.accept_stdio_framing(&info, rx)?;
        let codec = *self.wire_codec();
        if info.frame_header == Some(FrameHeader::Compact) {
            if self.offered != FrameHeader::Compact || codec.framing() != Framing::LengthPrefixed {
                return Err(ProtocolError::InvalidReady(
                    "worker chose frame_header compact, which was not offered".into(),
                )
                .into());
            }
            tracing::debug!(worker = %self.label, "compact frames accepted");
            // Set before the handshake returns, so before any request is sent.
            let _ = self
                .compact
                .set(CompactWire::new(codec.kind(), codec.max_frame(), &info));
        }
        Ok(info)
    }

    /// Checks `ready`'s answer to the stdio offer and, when it accepts, switches both
    /// halves of the link and the codec (before any request is sent; the host sends
    /// nothing before `ready`). `rx` is the receive half, held by the handshake.
    fn accept_stdio_framing(&self, info: &ReadyInfo, rx: &mut RxHalf) -> Result<(), SpawnError> {
        let offered = self.offered_stdio;
        let codec = match (info.stdio_framing, info.stdio_codec.as_deref()) {
            (None | Some(StdioFraming::Lines), None) => return Ok(()),
            (Some(StdioFraming::LengthPrefixed), Some(name))
                if offered.is_some_and(|k| k.as_str() == name) =>
            {
                offered.unwrap_or_default()
            }
            (framing, codec) => {
                return Err(ProtocolError::InvalidReady(format!(
                    "worker chose stdio_framing {} with stdio_codec {}, which was not offered \
                     (offered: {})",
                    framing.map_or("(none)", StdioFraming::as_str),
                    codec.unwrap_or("(none)"),
                    offered.map_or("nothing", CodecKind::as_str),
                ))
                .into())
            }
        };
        let codec = Codec::new(codec, Framing::LengthPrefixed, self.codec.max_frame())?;
        // The receive half first: bytes the worker sent after `ready` are already read ahead.
        rx.receiver
            .switch_framing(Framing::LengthPrefixed)
            .map_err(SpawnError::Transport)?;
        self.tx
            .lock()
            .sender
            .switch_framing(Framing::LengthPrefixed)
            .map_err(SpawnError::Transport)?;
        tracing::debug!(worker = %self.label, codec = %codec.kind(), "stdio switched to length-prefixed frames");
        let _ = self.switched.set(codec);
        Ok(())
    }

    /// The codec of the frames on the link now: the stdio switch's once it happened.
    pub(crate) fn wire_codec(&self) -> &Codec {
        self.switched.get().unwrap_or(&self.codec)
    }

    /// How frames are delimited on the link now (after the handshake: after any switch).
    pub fn framing(&self) -> Framing {
        self.wire_codec().framing()
    }

    /// The frame header this link uses (after the handshake).
    pub fn frame_header(&self) -> FrameHeader {
        match self.compact.get() {
            Some(_) => FrameHeader::Compact,
            None => FrameHeader::Envelope,
        }
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
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.reserve()?
            .send_filled(request, fill, attachments, deadline)
    }

    /// Claims a place for one request (it counts in [`in_flight`](Self::in_flight) from
    /// now), to be sent with [`Reservation::send`]. Dropping the reservation unsent
    /// releases the place.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, CallError> {
        let key = self.ids.next_number();
        let id = RequestId::new(key);
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
    fn register_async(self: &Arc<Self>, key: u64) -> Result<(), CallError> {
        self.read_for(key, false)
    }

    /// Has the reader thread read for request `key` (starting the thread the first time,
    /// and waking it); with `only_if_pending`, only while `key` is pending, checked under
    /// the same lock, so a key whose answer was routed meanwhile is never added.
    fn read_for(self: &Arc<Self>, key: u64, only_if_pending: bool) -> Result<(), CallError> {
        {
            let mut st = self.state.lock();
            if only_if_pending && !st.pending.contains_key(&key) {
                st.reader_reads_for.remove(&key);
                return Ok(());
            }
            st.reader_reads_for.insert(key);
            if !st.reader_started {
                st.reader_started = true;
                let conn = self.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("reader-{}", self.label))
                    .spawn(move || conn.reader_loop());
                if spawned.is_err() {
                    st.reader_started = false;
                    st.reader_reads_for.remove(&key);
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
        let _ = self.send_request(&EnvelopeRef::from(&cancel), None, &[]);
    }

    /// Fails every pending request with `worker_crashed` and refuses new ones; the pool
    /// calls this when it kills the worker.
    pub fn fail_all(&self, why: &str) {
        let slots: Vec<Arc<Slot>> = {
            let mut st = self.state.lock();
            if st.broken.is_none() {
                st.broken = Some(why.to_owned());
            }
            st.release_held();
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

    /// The async caller of request `key` has its answer (or never sent it).
    fn async_done(&self, key: u64) {
        self.state.lock().reader_reads_for.remove(&key);
    }

    /// An async caller stops waiting for request `key`: while the request is pending the
    /// reader thread reads for it (for the worker's answer to the cancel) until that answer
    /// is routed ([`State::forget`]), even when the caller was reading the link itself.
    fn async_abandoned(self: &Arc<Self>, key: u64) {
        if let Err(e) = self.read_for(key, true) {
            // The answer waits on the link until the next caller reads it.
            tracing::warn!(worker = %self.label, error = %e, "no reader for an abandoned request");
        }
    }
}

impl State {
    /// Request `key` left the pending table with its final answer: the reader thread
    /// need not read for it any more.
    fn forget(&mut self, key: u64) {
        self.reader_reads_for.remove(&key);
    }

    /// Every request is leaving the pending table: the reader thread reads for none.
    fn release_held(&mut self) {
        self.reader_reads_for.clear();
    }
}

/// Stands in for a sender that was closed on purpose.
struct ClosedSender;

impl FrameSender for ClosedSender {
    fn send(&mut self, _parts: &[&[u8]]) -> Result<(), TransportError> {
        Err(TransportError::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecKind, Framing};
    use crate::protocol::MessageType;
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
            let pending = conn.start_filled(&request, fill, &[b"x"], None).unwrap();
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

    /// A pool's async caller reads the link itself first; an answer that comes after its
    /// window is read by the reader thread, which the caller woke when it stopped.
    #[test]
    fn an_async_caller_that_stops_leading_hands_the_read_to_the_reader_thread() {
        let (host, mut worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "t", None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for round in 0..3 {
            let mut pending = conn
                .reserve()
                .unwrap()
                .send_async_leading(
                    &Envelope::request("", "op", Value::Null),
                    Fill::default(),
                    &[],
                    None,
                    Duration::from_micros(50),
                )
                .unwrap();
            worker.receiver.recv(&mut buf, None).unwrap();
            let request = codec.decode(&buf).unwrap().envelope;
            let reply =
                |n: u64| Envelope::response(format!("w-{n}"), &request.message_id, n.into());
            if round == 1 {
                // Already there at the first poll: the caller reads it itself, once the
                // reader thread, which reads for no one now, has let go of the link.
                codec.encode(&reply(round), &[], &mut out).unwrap();
                worker.sender.send(&[&out]).unwrap();
                while conn.rx.is_locked() {
                    std::thread::yield_now();
                }
            }
            {
                let mut next = std::pin::pin!(pending.next_async());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let first = std::future::Future::poll(next.as_mut(), &mut cx);
                if round == 1 {
                    assert!(matches!(
                        first,
                        std::task::Poll::Ready(Some(Incoming::Done(Ok(_))))
                    ));
                    continue;
                }
                // Nothing came within the window: the poll gave up leading.
                assert!(first.is_pending());
            }
            assert_eq!(pending.lead_until, None);
            // An event, then the answer, both read by the reader thread.
            let event = Envelope::event(
                "w-e",
                Some(request.message_id.clone()),
                "progress",
                Value::Null,
            );
            for env in [event, reply(round)] {
                codec.encode(&env, &[], &mut out).unwrap();
                worker.sender.send(&[&out]).unwrap();
            }
            let got = rt.block_on(async {
                let mut got = Vec::new();
                while let Some(item) = pending.next_async().await {
                    got.push(matches!(item, Incoming::Done(Ok(_))));
                }
                got
            });
            assert_eq!(got, [false, true]);
        }
        assert_eq!(conn.state.lock().reader_reads_for.len(), 0);
        conn.close();
    }

    /// A leading caller whose `on_event` (or, in place, whose visitor) panics still steps
    /// down: the other request's caller is nudged and finds the link free, where it would
    /// otherwise wait for a nudge that never came.
    #[test]
    fn a_leader_that_panics_steps_down_and_lets_go_of_the_link() {
        let (host, mut worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "t", None);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut recv_request = |worker: &mut crate::transport::Link| {
            worker.receiver.recv(&mut buf, None).unwrap();
            codec.decode(&buf).unwrap().envelope
        };
        let other = conn
            .start(Envelope::request("", "op", Value::Null), &[], None)
            .unwrap();
        recv_request(&mut worker);
        for in_place in [false, true] {
            let nudged = |other: &Pending| other.slot.pop_or_nudges().unwrap_err();
            let nudges_before = nudged(&other);
            let leader = conn
                .start(Envelope::request("", "op", Value::Null), &[], None)
                .unwrap();
            let request = recv_request(&mut worker);
            // The leader reads an event for its request (which its `on_event` panics at),
            // or its answer (which its visitor panics at).
            let reply = if in_place {
                Envelope::response("w-1", &request.message_id, Value::Null)
            } else {
                Envelope::event("w-1", Some(request.message_id.clone()), "e", Value::Null)
            };
            codec.encode(&reply, &[], &mut out).unwrap();
            worker.sender.send(&[&out]).unwrap();
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if in_place {
                    leader.wait_in_place(|_| {}, |_| -> () { panic!("the visitor panics") })
                } else {
                    leader.wait(|_| panic!("on_event panics")).map(|_| ())
                }
            }));
            assert!(unwound.is_err());
            assert!(!conn.rx.is_locked(), "the link is let go of");
            assert_eq!(
                nudged(&other),
                nudges_before + 1,
                "the other caller is nudged"
            );
            // The unwound `Pending`'s cancel (harmless for an answered request).
            assert_eq!(recv_request(&mut worker).kind, MessageType::Cancel);
        }
        let answer = Envelope::response("w-2", other.id(), Value::from(7));
        codec.encode(&answer, &[], &mut out).unwrap();
        worker.sender.send(&[&out]).unwrap();
        assert_eq!(other.wait(|_| {}).unwrap().data, Value::from(7));
        conn.close();
    }

    #[test]
    fn the_reader_reads_on_for_an_abandoned_async_request_until_the_worker_answers() {
        let (host, mut worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "t", None);
        let waiters = |conn: &Connection| conn.state.lock().reader_reads_for.len();
        let mut buf = Vec::new();
        let mut out = Vec::new();

        // Abandoned while pending: the reader thread keeps reading for it.
        let pending = conn
            .start_async(Envelope::request("", "op", Value::Null), &[], None)
            .unwrap();
        let id = pending.id().to_owned();
        drop(pending);
        worker.receiver.recv(&mut buf, None).unwrap();
        worker.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(
            codec.decode(&buf).unwrap().envelope.kind,
            MessageType::Cancel
        );
        assert_eq!((conn.in_flight(), waiters(&conn)), (1, 1));
        // The worker answers the cancel; the reader thread reads it, with no caller waiting.
        let answer = Envelope::error(
            "w-1",
            &id,
            crate::protocol::ErrorBody::new(crate::protocol::ErrorCode::Cancelled, "cancelled"),
        );
        codec.encode(&answer, &[], &mut out).unwrap();
        worker.sender.send(&[&out]).unwrap();
        while conn.in_flight() != 0 {
            std::thread::yield_now();
        }
        assert_eq!(waiters(&conn), 0);

        // Abandoned after its answer arrived (not taken yet): nothing is read for it.
        let pending = conn
            .start_async(Envelope::request("", "op", Value::Null), &[], None)
            .unwrap();
        worker.receiver.recv(&mut buf, None).unwrap();
        let request = codec.decode(&buf).unwrap().envelope;
        let answer = Envelope::response("w-2", request.message_id, Value::Null);
        codec.encode(&answer, &[], &mut out).unwrap();
        worker.sender.send(&[&out]).unwrap();
        while conn.in_flight() != 0 {
            std::thread::yield_now();
        }
        // Routed: the reader thread reads for it no longer, though the caller has not
        // taken it yet.
        assert_eq!(waiters(&conn), 0);
        drop(pending);
        assert_eq!(waiters(&conn), 0);
        conn.close();
    }
}
