//! The host side of one worker: spawn, handshake, call, stop.

use super::call_error::CallError;
use super::env::{
    FERRY_CODEC, FERRY_HOST_PID, FERRY_MAX_FRAME, FERRY_TRANSPORT, FERRY_WORKER_ID,
    FERRY_WORKER_TYPE,
};
use super::spec::{Dialect, WorkerSpec};
use super::stderr_log;
use crate::codec::{Codec, CodecError, CodecKind, Framing};
use crate::protocol::{
    legacy, now_timestamp, Envelope, IdGenerator, MessageType, ProtocolError, ReadyInfo,
    OP_SHUTDOWN,
};
use crate::transport::{self, FrameReceiver, FrameSender, TransportError, TransportKind};
use serde_json::Value;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Give up (and cancel) after this long. Defaults to the request's `deadline_ms`, or
    /// no limit when neither is set.
    pub timeout: Option<Duration>,
}

/// A worker's successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The response envelope as received.
    pub envelope: Envelope,
    /// Its `data` (`null` when absent).
    pub data: Value,
    /// Its attachments, in order.
    pub attachments: Vec<Vec<u8>>,
}

/// One running worker process and its link, used from one thread at a time.
///
/// Calls are synchronous: the request is written and the answer read on the caller's own
/// thread, with no thread hop. Events (progress) reach the caller's closure as they arrive.
pub struct WorkerProcess {
    spec: WorkerSpec,
    child: Child,
    tx: Box<dyn FrameSender>,
    rx: Box<dyn FrameReceiver>,
    codec: Codec,
    ready: Option<ReadyInfo>,
    ids: IdGenerator,
    out: Vec<u8>,
    buf: Vec<u8>,
    stderr_thread: Option<JoinHandle<()>>,
    broken: bool,
    skipped_frames: u64,
}

impl std::fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess")
            .field("worker_id", &self.spec.worker_id)
            .field("pid", &self.child.id())
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl WorkerProcess {
    /// Starts the worker and, in the ferry dialect, waits for its `ready` event.
    pub fn spawn(spec: WorkerSpec) -> Result<Self, CallError> {
        let framing = spec.transport.framing();
        let codec = Codec::new(spec.codec, framing, spec.max_frame)?;
        if spec.dialect == Dialect::Legacy
            && (spec.transport != TransportKind::Stdio || spec.codec != CodecKind::Json)
        {
            return Err(CallError::Transport(TransportError::Unsupported(
                "the legacy dialect runs over stdio with json only".into(),
            )));
        }
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(FERRY_TRANSPORT, spec.transport.as_str())
            .env(FERRY_CODEC, spec.codec.as_str())
            .env(FERRY_MAX_FRAME, spec.max_frame.to_string())
            .env(FERRY_WORKER_ID, &spec.worker_id)
            .env(FERRY_WORKER_TYPE, &spec.worker_type)
            .env(FERRY_HOST_PID, std::process::id().to_string())
            // Transports that do not use stdin/stdout leave the worker's stdout as a second
            // log stream and its stdin closed.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let mut pending =
            transport::prepare(spec.transport, &spec.transport_options, spec.max_frame)
                .map_err(CallError::Transport)?;
        pending.configure(&mut cmd).map_err(CallError::Transport)?;
        let mut child = cmd.spawn().map_err(|source| CallError::Spawn {
            command: spec.command.clone(),
            source,
        })?;
        let stderr_thread = child
            .stderr
            .take()
            .and_then(|e| stderr_log::forward(e, spec.worker_id.clone()));
        let connect_deadline = Instant::now() + spec.startup_timeout;
        let link = match pending.connect(&mut child, connect_deadline) {
            Ok(link) => link,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(match e {
                    TransportError::Disconnected => CallError::ExitedBeforeReady {
                        status: CallError::status_text(status),
                    },
                    TransportError::Timeout => CallError::StartupTimeout(spec.startup_timeout),
                    other => CallError::Transport(other),
                });
            }
        };
        if let Some(stdout) = child.stdout.take() {
            // Not the protocol channel for this transport: the worker's prints are logged.
            drop(stderr_log::forward(
                stdout,
                format!("{}:stdout", spec.worker_id),
            ));
        }
        let mut worker = WorkerProcess {
            child,
            tx: link.sender,
            rx: link.receiver,
            codec,
            ready: None,
            ids: IdGenerator::new("r"),
            out: Vec::new(),
            buf: Vec::new(),
            stderr_thread,
            broken: false,
            skipped_frames: 0,
            spec,
        };
        if worker.spec.dialect == Dialect::Ferry {
            if let Err(e) = worker.handshake() {
                worker.kill();
                return Err(e);
            }
        }
        tracing::info!(worker = %worker.spec.worker_id, pid = worker.child.id(), "worker ready");
        Ok(worker)
    }

    fn handshake(&mut self) -> Result<(), CallError> {
        let timeout = self.spec.startup_timeout;
        let deadline = Instant::now() + timeout;
        let env = match self.next_envelope(Some(deadline)) {
            Ok(env) => env,
            Err(CallError::Timeout(_)) => return Err(CallError::StartupTimeout(timeout)),
            Err(CallError::WorkerCrashed { status }) => {
                return Err(CallError::ExitedBeforeReady { status })
            }
            Err(e) => return Err(e),
        };
        if !env.is_ready_event() {
            return Err(ProtocolError::NotReady(env.kind).into());
        }
        let info: ReadyInfo = serde_json::from_value(env.data.unwrap_or(Value::Null))
            .map_err(|e| ProtocolError::InvalidReady(e.to_string()))?;
        if info.protocol_version != crate::protocol::PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                expected: crate::protocol::PROTOCOL_VERSION,
                got: info.protocol_version,
            }
            .into());
        }
        if !info.codecs.iter().any(|c| c == self.spec.codec.as_str()) {
            return Err(ProtocolError::InvalidReady(format!(
                "worker does not speak codec {} (it lists {:?})",
                self.spec.codec, info.codecs
            ))
            .into());
        }
        self.ready = Some(info);
        Ok(())
    }

    /// Reads the next protocol message, skipping (and logging) lines that are not one.
    fn next_envelope(&mut self, deadline: Option<Instant>) -> Result<Envelope, CallError> {
        loop {
            match self.rx.recv(&mut self.buf, deadline) {
                Ok(()) => {}
                Err(TransportError::Timeout) => {
                    let waited = deadline
                        .map(|d| d.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    return Err(CallError::Timeout(waited));
                }
                Err(TransportError::Disconnected) => {
                    self.broken = true;
                    let status = self.exit_status_soon();
                    return Err(CallError::WorkerCrashed {
                        status: CallError::status_text(status),
                    });
                }
                Err(e) => return Err(CallError::Transport(e)),
            }
            match self.codec.decode(&self.buf) {
                Ok(decoded) => return Ok(decoded.envelope),
                Err(e) if self.is_skippable(&e) => self.skip_line(&e),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// On a line link, output that is not a protocol message (a banner, a stray print) is
    /// noise to skip; a well-formed envelope of another version is a real error.
    fn is_skippable(&self, e: &CodecError) -> bool {
        self.codec.framing() == Framing::Lines
            && matches!(e, CodecError::NotUtf8 | CodecError::Header { .. })
    }

    fn skip_line(&mut self, e: &dyn std::fmt::Display) {
        self.skipped_frames += 1;
        let preview = String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]).into_owned();
        tracing::warn!(worker = %self.spec.worker_id, error = %e, line = %preview, "skipping non-protocol output");
    }

    /// How many non-protocol lines the worker printed on the channel so far.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// The worker's `ready` description (`None` for legacy workers).
    pub fn ready_info(&self) -> Option<&ReadyInfo> {
        self.ready.as_ref()
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &WorkerSpec {
        &self.spec
    }

    /// Calls `operation` with `data` and waits for the answer; `on_event` sees each event.
    pub fn call(
        &mut self,
        operation: &str,
        data: Value,
        on_event: impl FnMut(&Envelope),
    ) -> Result<Response, CallError> {
        let request = Envelope::request(self.ids.next_id(), operation, data);
        self.call_with(request, &[], &CallOptions::default(), on_event)
    }

    /// Sends a prepared request (its `message_id` is replaced by a fresh one) with
    /// attachments and waits for the answer.
    pub fn call_with(
        &mut self,
        mut request: Envelope,
        attachments: &[&[u8]],
        options: &CallOptions,
        mut on_event: impl FnMut(&Envelope),
    ) -> Result<Response, CallError> {
        if self.broken {
            return Err(CallError::Closed);
        }
        request.message_id = self.ids.next_id();
        request.kind = MessageType::Request;
        request.timestamp.get_or_insert_with(now_timestamp);
        request
            .worker_type
            .get_or_insert_with(|| self.spec.worker_type.clone());
        let timeout = options
            .timeout
            .or(request.deadline_ms.map(Duration::from_millis));
        let deadline = timeout.map(|t| Instant::now() + t);
        if self.spec.dialect == Dialect::Legacy {
            return self.call_legacy(&request, deadline, timeout);
        }
        self.send(&request, attachments)?;
        let id = request.message_id;
        loop {
            let env = match self.next_envelope(deadline) {
                Err(CallError::Timeout(_)) => {
                    let cancel = Envelope::cancel(self.ids.next_id(), id.as_str());
                    let _ = self.send(&cancel, &[]);
                    return Err(CallError::Timeout(timeout.unwrap_or_default()));
                }
                other => other?,
            };
            if env.request_id.as_deref() != Some(id.as_str()) {
                tracing::debug!(worker = %self.spec.worker_id, message = %env.message_id, "skipping message for another request");
                continue;
            }
            match env.kind {
                MessageType::Event => on_event(&env),
                MessageType::Response => {
                    let decoded_attachments = self.take_attachments(&env)?;
                    return Ok(Response {
                        data: env.data.clone().unwrap_or(Value::Null),
                        envelope: env,
                        attachments: decoded_attachments,
                    });
                }
                MessageType::Error => {
                    let body = env.error.ok_or(ProtocolError::MissingField {
                        kind: MessageType::Error,
                        field: "error",
                    })?;
                    return Err(CallError::Remote(body));
                }
                other => {
                    tracing::warn!(worker = %self.spec.worker_id, kind = ?other, "unexpected message from worker");
                }
            }
        }
    }

    /// Re-decodes the current frame for its attachments (only when it has any).
    fn take_attachments(&self, env: &Envelope) -> Result<Vec<Vec<u8>>, CallError> {
        if env.attachments.is_empty() {
            return Ok(Vec::new());
        }
        let decoded = self.codec.decode(&self.buf)?;
        Ok(decoded.attachments_owned(&self.buf))
    }

    fn call_legacy(
        &mut self,
        request: &Envelope,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Response, CallError> {
        let line = legacy::encode_request(request);
        self.out.clear();
        serde_json::to_writer(&mut self.out, &line).map_err(|e| CodecError::Header {
            codec: CodecKind::Json,
            message: e.to_string(),
        })?;
        self.send_raw()?;
        loop {
            match self.rx.recv(&mut self.buf, deadline) {
                Ok(()) => {}
                Err(TransportError::Timeout) => {
                    return Err(CallError::Timeout(timeout.unwrap_or_default()))
                }
                Err(TransportError::Disconnected) => {
                    self.broken = true;
                    let status = self.exit_status_soon();
                    return Err(CallError::WorkerCrashed {
                        status: CallError::status_text(status),
                    });
                }
                Err(e) => return Err(CallError::Transport(e)),
            }
            let value: Value = match serde_json::from_slice(&self.buf) {
                Ok(v) => v,
                Err(e) => {
                    self.skip_line(&e);
                    continue;
                }
            };
            let env = match legacy::decode_answer(value, self.ids.next_id()) {
                Ok(env) => env,
                Err(e) => {
                    self.skip_line(&e);
                    continue;
                }
            };
            if env
                .request_id
                .as_deref()
                .is_some_and(|r| r != request.message_id)
            {
                tracing::debug!(worker = %self.spec.worker_id, "skipping legacy answer for another request");
                continue;
            }
            if let Some(body) = env.error {
                return Err(CallError::Remote(body));
            }
            return Ok(Response {
                data: env.data.clone().unwrap_or(Value::Null),
                envelope: env,
                attachments: Vec::new(),
            });
        }
    }

    fn send(&mut self, env: &Envelope, attachments: &[&[u8]]) -> Result<(), CallError> {
        self.codec.encode(env, attachments, &mut self.out)?;
        if self.codec.framing() == Framing::LengthPrefixed && !attachments.is_empty() {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + attachments.len());
            parts.push(&self.out);
            parts.extend_from_slice(attachments);
            return self.tx.send(&parts).map_err(|e| self.send_failed(e));
        }
        self.send_raw()
    }

    fn send_raw(&mut self) -> Result<(), CallError> {
        self.tx.send(&[&self.out]).map_err(|e| self.send_failed(e))
    }

    fn send_failed(&mut self, e: TransportError) -> CallError {
        match e {
            TransportError::Disconnected => {
                self.broken = true;
                let status = self.exit_status_soon();
                CallError::WorkerCrashed {
                    status: CallError::status_text(status),
                }
            }
            other => CallError::Transport(other),
        }
    }

    /// The exit status if the process ends within a moment (a closed channel usually
    /// means it is exiting).
    fn exit_status_soon(&mut self) -> Option<ExitStatus> {
        self.wait_timeout(Duration::from_millis(200))
    }

    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let mut nap = Duration::from_micros(100);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Stops the worker gracefully: the `shutdown` operation, then SIGTERM, then SIGKILL,
    /// each after `shutdown_grace`. Always reaps the process. Returns its exit status.
    pub fn shutdown(mut self) -> Result<ExitStatus, CallError> {
        let grace = self.spec.shutdown_grace;
        if !self.broken && self.spec.dialect == Dialect::Ferry {
            let request = Envelope::request(self.ids.next_id(), OP_SHUTDOWN, Value::Null);
            let options = CallOptions {
                timeout: Some(grace),
            };
            if let Err(e) = self.call_with(request, &[], &options, |_| {}) {
                tracing::debug!(worker = %self.spec.worker_id, error = %e, "shutdown request failed");
            }
        }
        // Closing the worker's input is the end-of-work signal every stdin loop understands
        // (the legacy dialect has no shutdown operation).
        self.tx = Box::new(ClosedSender);
        self.broken = true;
        if let Some(status) = self.wait_timeout(grace) {
            return Ok(status);
        }
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if let Some(status) = self.wait_timeout(grace) {
                return Ok(status);
            }
        }
        let _ = self.child.kill();
        self.child
            .wait()
            .map_err(|e| CallError::Transport(TransportError::Io(e)))
    }

    /// Kills the worker at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.broken = true;
    }
}

/// Stands in for a sender that was closed on purpose.
struct ClosedSender;

impl FrameSender for ClosedSender {
    fn send(&mut self, _parts: &[&[u8]]) -> Result<(), TransportError> {
        Err(TransportError::Disconnected)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // No zombies: a worker dropped without `shutdown` is killed and reaped.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Not joined: a grandchild may still hold the stderr pipe open; the thread ends
        // on its own when the last writer closes it.
        drop(self.stderr_thread.take());
    }
}
