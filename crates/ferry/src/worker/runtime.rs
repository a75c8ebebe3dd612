//! The worker side: `serve(handler)` runs the protocol loop in a worker process.
//!
//! Handlers run on the thread that reads the link, so a request costs no thread hop.
//! While a handler runs, [`Context::is_cancelled`](super::Context::is_cancelled) drains
//! the link without blocking: cancels take effect, `health` is answered at once, and
//! other requests wait in a queue, served in arrival order afterwards.

use super::env::{EnvError, WorkerEnv};
use super::handler::{Context, Handler, HandlerError, Reply, ReplyRef, Request};
use crate::codec::{
    request_id_of, with_parts, with_slices, Codec, CodecError, CodecKind, CompactWire,
    DecodedFrame, EnvelopeRef, Framing,
};
use crate::protocol::{
    Envelope, ErrorBody, ErrorCode, FrameHeader, IdGenerator, MessageType, Operation, ReadyInfo,
    StdioFraming,
};
use crate::transport::{FrameReceiver, FrameSender, Link, TransportError};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Why a worker's serve loop stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The environment the host set is unusable.
    #[error("worker environment: {0}")]
    Env(#[from] EnvError),
    /// The codec does not fit the transport.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The link failed other than by the host closing it.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl ServeError {
    /// The stable error code: `startup_failed` for an unusable environment, `protocol`
    /// for a codec that does not fit the transport, the transport's code otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServeError::Env(_) => ErrorCode::StartupFailed,
            ServeError::Codec(_) => ErrorCode::Protocol,
            ServeError::Transport(e) => e.code(),
        }
    }
}

/// A request taken off the link while another was running.
struct Queued {
    envelope: Envelope,
    attachments: Vec<Vec<u8>>,
}

/// The worker's side of the link, shared by the loop and a running handler's context.
pub(super) struct Io {
    tx: Box<dyn FrameSender>,
    /// `None` while a frame lent in place is being served (see [`serve_lent_frame`]).
    rx: Option<Box<dyn FrameReceiver>>,
    codec: Codec,
    /// The compact wire, once `ready` has accepted it.
    compact: Option<CompactWire>,
    ids: IdGenerator,
    /// The last message id sent, kept for its allocation.
    id_buf: String,
    out: Vec<u8>,
    pump_buf: Vec<u8>,
    queue: VecDeque<Queued>,
    host_gone: bool,
    /// A handler asked the loop to end after its answer ([`Context::stop_serving`]).
    stop_requested: bool,
    started: Instant,
    served: u64,
}

impl Io {
    pub(super) fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    pub(super) fn next_id(&self) -> String {
        self.ids.next_id()
    }

    pub(super) fn send(
        &mut self,
        env: &Envelope,
        attachments: &[&[u8]],
    ) -> Result<(), TransportError> {
        self.send_ref(&EnvelopeRef::from(env), attachments)
    }

    fn send_ref(
        &mut self,
        env: &EnvelopeRef<'_>,
        attachments: &[&[u8]],
    ) -> Result<(), TransportError> {
        self.send_numbered(env, None, attachments)
    }

    /// [`send_ref`](Self::send_ref) of an answer whose `request_id` has the number
    /// `id_number` when known (the request came in a compact header), so a compact link
    /// does not read it back from the text.
    fn send_numbered(
        &mut self,
        env: &EnvelopeRef<'_>,
        id_number: Option<u64>,
        attachments: &[&[u8]],
    ) -> Result<(), TransportError> {
        let encoded = match &self.compact {
            Some(wire) => wire.encode_numbered(env, id_number, attachments, &mut self.out),
            None => self.codec.encode_ref(env, attachments, &mut self.out),
        };
        if let Err(e) = encoded {
            tracing::error!(error = %e, "cannot encode outgoing message");
            return Err(TransportError::InvalidFrame(
                "outgoing message could not be encoded",
            ));
        }
        let raw = match self.codec.framing() {
            Framing::LengthPrefixed => attachments,
            Framing::Lines => &[],
        };
        let tx = &mut self.tx;
        match with_parts(&self.out, raw, |parts| tx.send(parts)) {
            Err(TransportError::Disconnected) => {
                self.host_gone = true;
                Err(TransportError::Disconnected)
            }
            other => other,
        }
    }

    /// Decodes `frame` into `place` (a compact link reuses what `place` holds); `false`:
    /// the frame cannot be read. It is logged and skipped, and when it is a request whose
    /// id can still be read, that request is answered `protocol` (so the host's caller
    /// hears why instead of waiting).
    fn decode(&mut self, frame: &[u8], place: &mut DecodedFrame) -> bool {
        let decoded = match &self.compact {
            Some(wire) => wire.decode_into(frame, place),
            None => self.codec.decode_into(frame, place),
        };
        match decoded {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "skipping undecodable frame");
                if let Some(id) = self.compact.as_ref().and_then(|_| request_id_of(frame)) {
                    self.send_error(&id, ErrorBody::new(e.code(), e.to_string()));
                }
                false
            }
        }
    }

    fn send_error(&mut self, request_id: &str, body: ErrorBody) {
        let env = Envelope::error(self.next_id(), request_id, body);
        let _ = self.send(&env, &[]);
    }

    fn health_data(&self) -> Value {
        json!({
            "status": "ok",
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "requests_served": self.served,
            "queued": self.queue.len(),
        })
    }

    /// Drains waiting messages without blocking while request `current` runs.
    pub(super) fn pump(&mut self, current: &str, cancelled: &mut bool) {
        let mut buf = std::mem::take(&mut self.pump_buf);
        // Why the receiver may be missing: the handler runs on a frame lent in place, which
        // holds the link until it returns; nothing can be drained meanwhile.
        while let Some(rx) = self.rx.as_mut() {
            match rx.recv(&mut buf, Some(Instant::now())) {
                Ok(()) => {}
                Err(TransportError::Timeout) => break,
                Err(TransportError::Disconnected) => {
                    self.host_gone = true;
                    *cancelled = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable frame");
                    continue;
                }
            }
            let mut decoded = DecodedFrame::default();
            if !self.decode(&buf, &mut decoded) {
                continue;
            }
            let is_health = decoded.envelope.kind == MessageType::Request
                && decoded
                    .envelope
                    .operation
                    .as_deref()
                    .map(Operation::classify)
                    == Some(Operation::Health);
            let attachments = if decoded.envelope.kind == MessageType::Request && !is_health {
                decoded.attachments_owned(&buf)
            } else {
                Vec::new()
            };
            let env = decoded.envelope;
            match env.kind {
                MessageType::Cancel => match env.request_id.as_deref() {
                    Some(id) if id == current => *cancelled = true,
                    Some(id) => self.cancel_queued(id),
                    None => tracing::warn!("cancel without request_id ignored"),
                },
                MessageType::Request if is_health => {
                    let answer =
                        Envelope::response(self.next_id(), env.message_id, self.health_data());
                    let _ = self.send(&answer, &[]);
                }
                MessageType::Request => self.queue.push_back(Queued {
                    envelope: env,
                    attachments,
                }),
                other => tracing::debug!(kind = ?other, "ignoring unexpected message while busy"),
            }
        }
        self.pump_buf = buf;
    }

    fn cancel_queued(&mut self, id: &str) {
        if let Some(pos) = self.queue.iter().position(|q| q.envelope.message_id == id) {
            if let Some(q) = self.queue.remove(pos) {
                self.send_error(
                    &q.envelope.message_id,
                    HandlerError::cancelled().into_body(),
                );
            }
        }
    }
}

/// Serves requests in a worker process started by a ferry host: reads the channel from
/// the environment ([`super::env`](mod@super::env)), sends `ready`, then answers until the host asks for
/// `shutdown` or goes away.
///
/// `operations` lists what the handler serves; an entry ending in `*` is a prefix
/// (`device.*`). Other operations are answered `unknown_operation` without calling it.
///
/// ```no_run
/// use ferry::worker::{serve, Reply};
/// serve("echo", &["echo"], |req: &ferry::worker::Request<'_>, _ctx: &mut ferry::worker::Context<'_>| {
///     Ok(Reply::data(req.data().clone()))
/// })?;
/// # Ok::<(), ferry::worker::ServeError>(())
/// ```
pub fn serve<H: Handler>(
    worker_type: &str,
    operations: &[&str],
    handler: H,
) -> Result<(), ServeError> {
    let env = WorkerEnv::from_env()?;
    // Ends this process if the host dies, even in the middle of a long handler call.
    super::watchdog::start();
    let link = crate::transport::worker_link(env.transport, env.max_frame)?;
    let codec = Codec::new(env.codec, link.framing, env.max_frame)?;
    let mut info = ReadyInfo::new(
        worker_type,
        operations.iter().map(|s| (*s).to_owned()).collect(),
    );
    env.accept_offers(link.framing, &mut info);
    serve_link(link, codec, info, handler)
}

/// Serves on an already connected link (in-process tests, custom transports).
///
/// `info` is sent as the `ready` event; with `info.frame_header` set to
/// [`FrameHeader::Compact`] (which a worker may do only when the host offered it, see
/// [`WorkerEnv::accepted_frame_header`]) every frame after it is a compact link's frame.
/// With `info.stdio_framing` set to [`StdioFraming::LengthPrefixed`] (only when offered,
/// see [`WorkerEnv::accept_offers`]) the link switches to length-prefixed frames in
/// `info.stdio_codec` right after `ready`.
pub fn serve_link<H: Handler>(
    link: Link,
    codec: Codec,
    info: ReadyInfo,
    mut handler: H,
) -> Result<(), ServeError> {
    // Checked before `ready` goes out: a switch the worker cannot make must not be announced.
    let switch_to = stdio_switch(&link, &codec, &info)?;
    let mut io = Io {
        tx: link.sender,
        rx: Some(link.receiver),
        codec,
        compact: None,
        ids: IdGenerator::new("w"),
        id_buf: String::new(),
        out: Vec::new(),
        pump_buf: Vec::new(),
        queue: VecDeque::new(),
        host_gone: false,
        stop_requested: false,
        started: Instant::now(),
        served: 0,
    };
    let ready = Envelope::ready(io.next_id(), &info);
    match io.send(&ready, &[]) {
        Ok(()) => {}
        Err(TransportError::Disconnected) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if let Some(after) = switch_to {
        // Everything after `ready`, both ways, is a length-prefixed frame in `after`.
        io.tx.switch_framing(Framing::LengthPrefixed)?;
        if let Some(rx) = io.rx.as_mut() {
            rx.switch_framing(Framing::LengthPrefixed)?;
        }
        io.codec = after;
    }
    let codec = io.codec;
    if info.frame_header == Some(FrameHeader::Compact) && codec.framing() == Framing::LengthPrefixed
    {
        // Everything after `ready`, both ways, is a compact link's frame.
        io.compact = Some(CompactWire::new(codec.kind(), codec.max_frame(), &info));
    }
    let lends_in_place = io.rx.as_ref().is_some_and(|rx| rx.lends_in_place());
    let mut buf = Vec::new();
    // Every request is decoded here, reusing the texts and lists of the one before.
    let mut place = DecodedFrame::default();
    while !io.host_gone && !io.stop_requested {
        if let Some(q) = io.queue.pop_front() {
            let stop = with_slices(&q.attachments, |atts| {
                dispatch(&mut io, &info, &mut handler, &q.envelope, None, atts)
            });
            if stop {
                break;
            }
            continue;
        }
        let served = if lends_in_place {
            serve_lent_frame(&mut io, &info, &mut handler, &mut buf, &mut place)
        } else {
            serve_received_frame(&mut io, &info, &mut handler, &mut buf, &mut place)
        };
        // Not held while the link is idle (it may be large); its answer has been sent.
        place.envelope.data = None;
        match served {
            Ok(false) => {}
            Ok(true) | Err(TransportError::Disconnected) => break,
            Err(e @ TransportError::FrameTooLarge { .. }) => {
                tracing::warn!(error = %e, "skipping oversized frame");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives one frame into `buf` and handles it; `Ok(true)`: the worker should stop.
fn serve_received_frame<H: Handler>(
    io: &mut Io,
    info: &ReadyInfo,
    handler: &mut H,
    buf: &mut Vec<u8>,
    place: &mut DecodedFrame,
) -> Result<bool, TransportError> {
    let rx = io
        .rx
        .as_mut()
        .expect("the receiver is back after every lent frame");
    rx.recv(buf, None)?;
    if !io.decode(buf, place) {
        return Ok(false);
    }
    Ok(dispatch_decoded(io, info, handler, place, buf))
}

/// Receives one frame on a transport that lends it in place (shm) and handles it there
/// when the handler serves that operation in place ([`Handler::in_place`]): the request's
/// data and attachments are read in the ring and an echo answers from them. Any other
/// request is copied into `buf` first and served after the ring space is given back, so
/// that a long handler neither holds the host's sends back nor stops cancels and `health`
/// from being drained. `Ok(true)`: the worker should stop.
fn serve_lent_frame<H: Handler>(
    io: &mut Io,
    info: &ReadyInfo,
    handler: &mut H,
    buf: &mut Vec<u8>,
    place: &mut DecodedFrame,
) -> Result<bool, TransportError> {
    let mut rx = io
        .rx
        .take()
        .expect("the receiver is back after every lent frame");
    let mut stop = false;
    let mut copied = false;
    let received = rx.recv_with(&mut Vec::new(), None, &mut |frame| {
        if !io.decode(frame, place) {
            return;
        }
        if runs_in_place(&place.envelope, handler) {
            stop = dispatch_decoded(io, info, handler, place, frame);
        } else {
            // The frame's ranges locate the attachments in the copy just as well.
            buf.clear();
            buf.extend_from_slice(frame);
            copied = true;
        }
    });
    io.rx = Some(rx);
    received?;
    if copied {
        stop = dispatch_decoded(io, info, handler, place, buf);
    }
    Ok(stop)
}

/// Whether a message is handled while its frame is lent: everything but a request for an
/// operation the handler does not serve in place (built-ins and cancels are quick).
fn runs_in_place<H: Handler>(env: &Envelope, handler: &H) -> bool {
    if env.kind != MessageType::Request {
        return true;
    }
    match env.operation.as_deref().map(Operation::classify) {
        Some(Operation::Custom(op)) => handler.in_place(op),
        _ => true,
    }
}

/// Handles a decoded frame whose bytes are `frame`; `true`: the worker should stop.
fn dispatch_decoded<H: Handler>(
    io: &mut Io,
    info: &ReadyInfo,
    handler: &mut H,
    decoded: &DecodedFrame,
    frame: &[u8],
) -> bool {
    // Listed on the stack (up to four, as a send lists its parts): a vector here was 8% of
    // the echo worker's own CPU time per small shm request, with the answer's list
    // (docs/benchmarks.md, fourteenth round).
    decoded.with_attachments(frame, |atts| {
        dispatch(
            io,
            info,
            handler,
            &decoded.envelope,
            decoded.id_number(),
            atts,
        )
    })
}

/// The codec of the frames after `ready` when `info` accepts length-prefixed stdio frames.
fn stdio_switch(link: &Link, codec: &Codec, info: &ReadyInfo) -> Result<Option<Codec>, ServeError> {
    if info.stdio_framing != Some(StdioFraming::LengthPrefixed) {
        return Ok(None);
    }
    if link.framing != Framing::Lines {
        return Err(
            TransportError::Unsupported("stdio_framing on a link that is not a line link").into(),
        );
    }
    let kind: CodecKind = info.stdio_codec.as_deref().unwrap_or_default().parse()?;
    Ok(Some(Codec::new(
        kind,
        Framing::LengthPrefixed,
        codec.max_frame(),
    )?))
}

/// Handles one incoming message; returns `true` when the worker should stop. `id_number`:
/// the number of its id, when it came in a compact header.
fn dispatch<'r, H: Handler>(
    io: &mut Io,
    info: &ReadyInfo,
    handler: &mut H,
    env: &'r Envelope,
    id_number: Option<u64>,
    attachments: &'r [&'r [u8]],
) -> bool {
    match env.kind {
        MessageType::Request => {}
        MessageType::Cancel => {
            if let Some(id) = env.request_id.as_deref() {
                io.cancel_queued(id);
            }
            return false;
        }
        other => {
            tracing::debug!(kind = ?other, "ignoring message a worker does not expect");
            return false;
        }
    }
    let id = env.message_id.as_str();
    let Some(operation) = env.operation.as_deref() else {
        io.send_error(
            id,
            ErrorBody::new(ErrorCode::InvalidRequest, "request lacks `operation`"),
        );
        return false;
    };
    let answer = match Operation::classify(operation) {
        Operation::Health => Ok(ReplyRef::from(Reply::data(io.health_data()))),
        Operation::Capabilities => Ok(ReplyRef::from(Reply::data(
            serde_json::to_value(info).unwrap_or(Value::Null),
        ))),
        Operation::Shutdown => {
            let env = Envelope::response(io.next_id(), id, json!({"status": "shutting_down"}));
            let _ = io.send(&env, &[]);
            return true;
        }
        Operation::Custom(op) if !serves(info, op) => Err(HandlerError::new(
            ErrorCode::UnknownOperation,
            format!(
                "operation `{op}` is not served by worker type `{}`",
                info.worker_type
            ),
        )),
        Operation::Custom(_) => run_handler(io, handler, env, attachments),
    };
    io.served += 1;
    match answer {
        Ok(reply) => {
            // Sent from a view: the id reuses a buffer, the data and attachments are sent
            // from where the handler left them (the request's, for an echo).
            let mut message_id = std::mem::take(&mut io.id_buf);
            io.ids.next_id_into(&mut message_id);
            let mut out = EnvelopeRef::new(MessageType::Response, &message_id);
            out.request_id = Some(id);
            out.success = Some(true);
            out.data = Some(&reply.data);
            out.metrics = reply.metrics.as_ref();
            let sent = with_slices(&reply.attachments, |atts| {
                io.send_numbered(&out, id_number, atts)
            });
            io.id_buf = message_id;
            if let Err(e) = sent {
                if !matches!(e, TransportError::Disconnected) {
                    io.send_error(
                        id,
                        ErrorBody::new(e.code(), format!("cannot send response: {e}")),
                    );
                }
            }
        }
        Err(e) => io.send_error(id, e.into_body()),
    }
    false
}

fn serves(info: &ReadyInfo, op: &str) -> bool {
    info.operations
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => op.starts_with(prefix),
            None => pattern == op,
        })
}

fn run_handler<'r, H: Handler>(
    io: &mut Io,
    handler: &mut H,
    env: &'r Envelope,
    attachments: &'r [&'r [u8]],
) -> Result<ReplyRef<'r>, HandlerError> {
    // The clock is read only when something needs it: a quick operation the handler does
    // not want timed, without a deadline, reads none (two reads are 5-7% of a small shm
    // round trip).
    let timed = handler.timed(env.operation.as_deref().unwrap_or_default());
    let started = (timed || env.deadline_ms.is_some()).then(Instant::now);
    let deadline = env
        .deadline_ms
        .zip(started)
        .map(|(ms, started)| started + Duration::from_millis(ms));
    let request = Request {
        envelope: env,
        attachments,
    };
    let mut ctx = Context {
        io,
        request_id: &env.message_id,
        deadline,
        cancelled: false,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        handler.handle_borrowed(&request, &mut ctx)
    }));
    match result {
        Ok(Ok(mut reply)) => {
            if let Some(started) = started.filter(|_| timed) {
                let metrics = reply.metrics.get_or_insert_with(Default::default);
                metrics
                    .processing_time_ms
                    .get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(reply)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(HandlerError::internal(format!("handler panicked: {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecKind, Framing};
    use crate::transport::memory;

    #[test]
    fn stop_serving_ends_the_loop_after_the_answer() {
        let (mut host, worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::Json, Framing::LengthPrefixed, 1 << 20).unwrap();
        let info = ReadyInfo::new("t", vec!["stop".into()]);
        let served = std::thread::spawn(move || {
            serve_link(
                worker,
                codec,
                info,
                |_: &Request<'_>, ctx: &mut Context<'_>| {
                    ctx.stop_serving();
                    Ok(Reply::data(json!("bye")))
                },
            )
        });
        let mut out = Vec::new();
        let request = Envelope::request("r-1", "stop", Value::Null);
        codec.encode(&request, &[], &mut out).unwrap();
        host.sender.send(&[&out]).unwrap();
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        assert!(codec.decode(&buf).unwrap().envelope.is_ready_event());
        host.receiver.recv(&mut buf, None).unwrap();
        let answer = codec.decode(&buf).unwrap().envelope;
        assert_eq!(answer.request_id.as_deref(), Some("r-1"));
        assert_eq!(answer.data, Some(json!("bye")));
        // The loop ended by itself while the host's end is still open.
        served.join().unwrap().unwrap();
        drop(host);
    }

    /// Reports whether a cancel sent before the call is seen from inside it: a frame
    /// served in place holds the link, so nothing is drained; a copied one does not.
    struct SeesCancel(std::sync::mpsc::Receiver<()>);

    impl Handler for SeesCancel {
        fn handle(
            &mut self,
            _: &Request<'_>,
            ctx: &mut Context<'_>,
        ) -> Result<Reply, HandlerError> {
            // Waits until the host has sent the cancel, so the check below is not a race.
            self.0
                .recv()
                .map_err(|e| HandlerError::internal(e.to_string()))?;
            Ok(Reply::data(json!(ctx.is_cancelled())))
        }

        fn in_place(&self, operation: &str) -> bool {
            operation == "lent"
        }
    }

    #[test]
    fn shm_serves_in_place_only_the_operations_the_handler_names() {
        let options = crate::transport::shm::ShmOptions::default().capacity(1 << 16);
        let (host, worker) = crate::transport::shm::pair(&options, 1 << 15).unwrap();
        let (mut host, worker) = (host.into_link(), worker.into_link());
        assert!(worker.receiver.lends_in_place());
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 15).unwrap();
        let info = ReadyInfo::new("t", vec!["lent".into(), "copied".into()]);
        let (go, wait) = std::sync::mpsc::channel();
        let served = std::thread::spawn(move || serve_link(worker, codec, info, SeesCancel(wait)));
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        assert!(codec.decode(&buf).unwrap().envelope.is_ready_event());
        let mut out = Vec::new();
        for (id, op, drained) in [("r-1", "lent", false), ("r-2", "copied", true)] {
            codec
                .encode(&Envelope::request(id, op, Value::Null), &[], &mut out)
                .unwrap();
            host.sender.send(&[&out]).unwrap();
            codec
                .encode(&Envelope::cancel("c", id), &[], &mut out)
                .unwrap();
            host.sender.send(&[&out]).unwrap();
            go.send(()).unwrap();
            host.receiver.recv(&mut buf, None).unwrap();
            let answer = codec.decode(&buf).unwrap().envelope;
            assert_eq!(answer.request_id.as_deref(), Some(id));
            assert_eq!(answer.data, Some(json!(drained)), "{op}");
        }
        drop(host);
        served.join().unwrap().unwrap();
    }

    /// The echo handler served over a memory link (MessagePack, length-prefixed) for
    /// `operations`, past its `ready`: the host's end, the codec and the serving thread.
    fn echo_served(
        operations: &[&str],
    ) -> (Link, Codec, std::thread::JoinHandle<Result<(), ServeError>>) {
        let (mut host, worker) = memory::pair(1 << 20);
        let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20).unwrap();
        let info = ReadyInfo::new("echo", operations.iter().map(|&o| o.into()).collect());
        let served =
            std::thread::spawn(move || serve_link(worker, codec, info, crate::worker::echo::Echo));
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        assert!(codec.decode(&buf).unwrap().envelope.is_ready_event());
        (host, codec, served)
    }

    #[test]
    fn borrowing_echo_answers_with_the_requests_data_and_attachments() {
        let (mut host, codec, served) = echo_served(&["echo"]);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let attachments: [&[u8]; 2] = [b"first", &[0, 1, 2, 255]];
        let data = json!({"prompt": "a fox", "n": [1, 2.5]});
        let request = Envelope::request("r-1", "echo", data.clone());
        codec.encode(&request, &attachments, &mut out).unwrap();
        let frame = [out.as_slice(), attachments[0], attachments[1]].concat();
        host.sender.send(&[&frame]).unwrap();
        host.receiver.recv(&mut buf, None).unwrap();
        let answer = codec.decode(&buf).unwrap();
        assert_eq!(answer.envelope.kind, MessageType::Response);
        assert_eq!(answer.envelope.request_id.as_deref(), Some("r-1"));
        assert_eq!(answer.envelope.message_id, "w-2");
        assert_eq!(answer.envelope.data, Some(data));
        // The echo is not timed (`Echo::timed`).
        assert_eq!(answer.envelope.metrics, None);
        assert_eq!(
            answer.attachments_owned(&buf),
            attachments.map(<[u8]>::to_vec)
        );
        drop(host);
        served.join().unwrap().unwrap();
    }

    #[test]
    fn timed_operations_answer_their_processing_time_and_untimed_ones_none() {
        let (mut host, codec, served) = echo_served(&["echo", "sleep"]);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut answer = |op: &str, data: Value, deadline_ms: Option<u64>| {
            let mut request = Envelope::request("r-1", op, data);
            request.deadline_ms = deadline_ms;
            codec.encode(&request, &[], &mut out).unwrap();
            host.sender.send(&[&out]).unwrap();
            // Past the progress events, to the answer.
            let answer = loop {
                host.receiver.recv(&mut buf, None).unwrap();
                let message = codec.decode(&buf).unwrap().envelope;
                if message.is_terminal() {
                    break message;
                }
            };
            assert_eq!(answer.success, Some(true), "{answer:?}");
            answer.metrics.and_then(|m| m.processing_time_ms)
        };
        let slept = answer("sleep", json!({"ms": 1, "steps": 1}), None);
        assert!(slept.is_some_and(|ms| ms >= 1.0), "{slept:?}");
        assert_eq!(answer("echo", Value::Null, None), None);
        // A deadline reads the clock, but an untimed answer still carries no time.
        assert_eq!(answer("echo", Value::Null, Some(60_000)), None);
        drop(host);
        served.join().unwrap().unwrap();
    }
}
