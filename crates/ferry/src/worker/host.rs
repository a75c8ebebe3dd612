//! The host side of one worker: spawn, handshake, call, stop.

use super::env::{
    FERRY_CODEC, FERRY_FRAME_HEADER, FERRY_HOST_PID, FERRY_MAX_FRAME, FERRY_STDIO_CODEC,
    FERRY_STDIO_FRAMING, FERRY_TMPDIR, FERRY_TRANSPORT, FERRY_WORKER_ID, FERRY_WORKER_TYPE,
};
use super::spec::WorkerSpec;
use super::stderr_log::{self, ExitHook};
use crate::codec::{Codec, CodecKind, Framing};
use crate::connection::{Call, CallError, Pending, Response, ResponseRef, SpawnError};
use crate::connection::{Connection, Fill, FreedHook, Offer};
use crate::protocol::{Dialect, FrameHeader, StdioFraming};
use crate::protocol::{Envelope, ReadyInfo, Stamp, OP_SHUTDOWN};
use crate::transport::private_dir::PrivateDir;
use crate::transport::{self, TransportError, TransportKind};
use serde_json::Value;
use std::borrow::Borrow;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of one call.
///
/// ```
/// use ferry::worker::CallOptions;
/// use std::time::Duration;
/// let options = CallOptions::default().timeout(Duration::from_secs(5));
/// assert_eq!(options.timeout, Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// Give up (and cancel) after this long. Defaults to the request's `deadline_ms`, or
    /// no limit when neither is set.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The deadline for `request` under these options, from now.
    pub fn deadline_for(&self, request: &Envelope) -> Option<Instant> {
        self.timeout
            .or(request.deadline_ms.map(Duration::from_millis))
            .map(|t| Instant::now() + t)
    }
}

/// Callbacks a supervisor attaches to a worker it spawns.
#[derive(Default, Clone)]
#[non_exhaustive]
pub struct WorkerHooks {
    /// Runs whenever one of its requests ends (it has room again).
    pub on_freed: Option<FreedHook>,
    /// Runs when its stderr closes: it has (almost certainly) exited.
    pub on_exit: Option<ExitHook>,
}

impl std::fmt::Debug for WorkerHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHooks")
            .field("on_freed", &self.on_freed.is_some())
            .field("on_exit", &self.on_exit.is_some())
            .finish()
    }
}

/// One running worker process and its multiplexed connection.
///
/// Calls are synchronous: a caller on an idle worker writes the request and reads the
/// answer on its own thread, with no thread hop; several threads may call at once (see
/// [`Connection`]). Events (progress) reach the caller's closure as they arrive.
pub struct WorkerProcess {
    spec: WorkerSpec,
    child: Child,
    conn: Arc<Connection>,
    ready: Option<ReadyInfo>,
    stderr_thread: Option<JoinHandle<()>>,
    /// The worker's private temp folder: removed when this is dropped, after the process
    /// was reaped (fields drop after `Drop::drop`).
    _tmpdir: Option<PrivateDir>,
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
    ///
    /// Fails with a [`SpawnError`]: the program could not be started, it exited or
    /// timed out before `ready`, or its handshake broke the protocol. Either way no process
    /// is left behind.
    pub fn spawn(spec: WorkerSpec) -> Result<Self, SpawnError> {
        Self::spawn_with_hooks(spec, WorkerHooks::default())
    }

    /// Like [`spawn`](Self::spawn), with callbacks for a supervisor.
    pub fn spawn_with_hooks(spec: WorkerSpec, hooks: WorkerHooks) -> Result<Self, SpawnError> {
        let WorkerHooks { on_freed, on_exit } = hooks;
        // The built-in kind, or the custom transport the spec carries: one path for both.
        let chosen = spec.effective_transport();
        if spec.custom_transport.is_some() {
            transport::check_custom_name(chosen.name()).map_err(SpawnError::Transport)?;
        }
        let framing = chosen.framing();
        // Length-prefixed frames after `ready` on stdio: offered only when asked for; the
        // `ready` line (and a worker that ignores the offer) stays on JSON lines.
        let stdio_switch = spec.custom_transport.is_none()
            && spec.transport == TransportKind::Stdio
            && spec.dialect == Dialect::Ferry
            && spec.stdio_framing == StdioFraming::LengthPrefixed;
        let (line_codec, stdio_codec) = if stdio_switch {
            // Every codec fits length-prefixed frames.
            (CodecKind::Json, Some(spec.codec))
        } else {
            (spec.codec, None)
        };
        let codec = Codec::new(line_codec, framing, spec.max_frame)?;
        if spec.dialect == Dialect::Legacy
            && (spec.custom_transport.is_some()
                || spec.transport != TransportKind::Stdio
                || spec.codec != CodecKind::Json)
        {
            return Err(SpawnError::InvalidSpec {
                option: "dialect",
                reason: "the legacy dialect runs over stdio with json only".into(),
            });
        }
        // Only framed links of the ferry dialect can switch; others are told `envelope`.
        // (stdio too when it is offered to switch: compact then applies after the switch).
        let offered = if (framing == Framing::LengthPrefixed || stdio_switch)
            && spec.dialect == Dialect::Ferry
        {
            spec.frame_header
        } else {
            FrameHeader::Envelope
        };
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(FERRY_TRANSPORT, chosen.name())
            .env(FERRY_CODEC, line_codec.as_str())
            .env(FERRY_MAX_FRAME, spec.max_frame.to_string())
            .env(FERRY_FRAME_HEADER, offered.as_str())
            .env(FERRY_WORKER_ID, &spec.worker_id)
            .env(FERRY_WORKER_TYPE, &spec.worker_type)
            .env(FERRY_HOST_PID, std::process::id().to_string())
            // Transports that do not use stdin/stdout leave the worker's stdout as a second
            // log stream and its stdin closed.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdio_codec {
            Some(kind) => cmd
                .env(FERRY_STDIO_FRAMING, StdioFraming::LengthPrefixed.as_str())
                .env(FERRY_STDIO_CODEC, kind.as_str()),
            // Not inherited from this process's own environment either.
            None => cmd
                .env_remove(FERRY_STDIO_FRAMING)
                .env_remove(FERRY_STDIO_CODEC),
        };
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let tmpdir = if spec.private_tmpdir {
            let dir = private_tmpdir(&spec).map_err(|e| SpawnError::CannotStart {
                command: spec.command.clone(),
                source: e,
            })?;
            for var in ["TMPDIR", "TMP", "TEMP", FERRY_TMPDIR] {
                cmd.env(var, dir.path());
            }
            Some(dir)
        } else {
            None
        };
        let mut pending = chosen
            .prepare(&spec.transport_options, spec.max_frame)
            .map_err(SpawnError::Transport)?;
        pending.configure(&mut cmd).map_err(SpawnError::Transport)?;
        let mut child = cmd.spawn().map_err(|source| SpawnError::CannotStart {
            command: spec.command.clone(),
            source,
        })?;
        // The command may hold descriptors passed to the child (`transport::inherit`):
        // close the host's copies now, so the child's are the only ones.
        drop(cmd);
        let stderr_thread = child
            .stderr
            .take()
            .and_then(|e| stderr_log::forward(e, spec.worker_id.clone(), on_exit));
        let deadline = Instant::now() + spec.startup_timeout;
        let connected = pending.connect(&mut child, deadline).and_then(|link| {
            if link.framing == framing {
                Ok(link)
            } else {
                Err(TransportError::Internal(format!(
                    "transport {} announced {framing:?} framing but made a {:?} link",
                    chosen.name(),
                    link.framing
                )))
            }
        });
        let link = match connected {
            Ok(link) => link,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(match e {
                    TransportError::Disconnected => SpawnError::exited(status),
                    TransportError::Timeout => SpawnError::StartupTimeout(spec.startup_timeout),
                    other => SpawnError::Transport(other),
                });
            }
        };
        if let Some(stdout) = child.stdout.take() {
            // Not the protocol channel for this transport: the worker's prints are logged.
            drop(stderr_log::forward(
                stdout,
                format!("{}:stdout", spec.worker_id),
                None,
            ));
        }
        let conn = Connection::with_offer(
            link,
            codec,
            spec.dialect,
            spec.worker_id.clone(),
            on_freed,
            Offer::new(offered, stdio_codec),
        );
        let mut worker = WorkerProcess {
            child,
            conn,
            ready: None,
            stderr_thread,
            spec,
            _tmpdir: tmpdir,
        };
        if worker.spec.dialect == Dialect::Ferry {
            match worker.conn.handshake(deadline, worker.spec.startup_timeout) {
                Ok(info) => worker.ready = Some(info),
                Err(e) => {
                    let e = match e {
                        SpawnError::ExitedBeforeReady { .. } => {
                            SpawnError::exited(worker.exit_status_soon())
                        }
                        other => other,
                    };
                    worker.kill();
                    return Err(e);
                }
            }
        }
        tracing::info!(worker = %worker.spec.worker_id, pid = worker.child.id(), "worker ready");
        Ok(worker)
    }

    /// How many non-protocol lines the worker printed on the channel so far.
    pub fn skipped_frames(&self) -> u64 {
        self.conn.skipped_frames()
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

    /// The multiplexed connection, for callers that manage requests themselves.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `call` and waits for the answer on this thread; the call's event handler sees
    /// each event as it arrives. The connection assigns the message id; the spec's worker
    /// type and the send time are filled in on the wire.
    ///
    /// With a worker in the old design's legacy dialect, one line of shell (a ferry worker
    /// is spawned the same way, without `.dialect(..)`):
    ///
    /// ```
    /// use ferry::prelude::*;
    /// use serde_json::json;
    ///
    /// let script = r#"while read -r _; do echo '{"success": true, "data": {"x": 1}}'; done"#;
    /// let spec = WorkerSpec::new("echo", "sh", ["-c", script]).dialect(Dialect::Legacy);
    /// let mut worker = WorkerProcess::spawn(spec)?;
    /// let reply = worker.send(Call::new("echo").data(json!({"x": 1})))?;
    /// assert_eq!(reply.data, json!({"x": 1}));
    /// worker.shutdown()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, call: Call<'_>) -> Result<Response, CallError> {
        let (request, attachments, mut on_event) = call.into_parts();
        let parts: Vec<&[u8]> = attachments.iter().map(|a| &a[..]).collect();
        self.call_with(
            request,
            &parts,
            &CallOptions::default(),
            crate::connection::envelope_events(&mut on_event),
        )
    }

    /// Calls `operation` with `data` and waits for the answer; `on_event` sees each event.
    pub fn call(
        &mut self,
        operation: &str,
        data: Value,
        on_event: impl FnMut(&Envelope),
    ) -> Result<Response, CallError> {
        let request = Envelope::request("", operation, data);
        self.call_with(request, &[], &CallOptions::default(), on_event)
    }

    /// Sends a prepared request (its `message_id` is replaced by a fresh one on the wire; a
    /// request without `timestamp` or `worker_type` is sent with the current time and the
    /// spec's worker type) with attachments and waits for the answer.
    ///
    /// `request` is an [`Envelope`] or a reference to one: a host that sends the same
    /// request again and again keeps it and lends it, and nothing is built, moved or freed
    /// for it per call (the request is only read).
    pub fn call_with(
        &mut self,
        request: impl Borrow<Envelope>,
        attachments: &[&[u8]],
        options: &CallOptions,
        on_event: impl FnMut(&Envelope),
    ) -> Result<Response, CallError> {
        let result = self
            .start_call(request.borrow(), attachments, options)
            .and_then(|pending| pending.wait(on_event));
        self.with_exit_status(result)
    }

    /// Like [`call_with`](Self::call_with), but the answer is not copied out of the link:
    /// `f` sees it in place (on shm, its data decoded inside the ring and its attachments
    /// as slices of it) and its result is returned; see [`Pending::wait_in_place`]. For a
    /// host that only reads the answer (checks it, copies a part, hands it to a GPU
    /// buffer), this saves the copy into an owned [`Response`].
    ///
    /// `request`, as in `call_with`, is an [`Envelope`] or a reference to one.
    ///
    /// [`Pending::wait_in_place`]: crate::connection::Pending::wait_in_place
    pub fn call_in_place<R>(
        &mut self,
        request: impl Borrow<Envelope>,
        attachments: &[&[u8]],
        options: &CallOptions,
        on_event: impl FnMut(&Envelope),
        f: impl FnOnce(ResponseRef<'_>) -> R,
    ) -> Result<R, CallError> {
        let result = self
            .start_call(request.borrow(), attachments, options)
            .and_then(|pending| pending.wait_in_place(on_event, f));
        self.with_exit_status(result)
    }

    /// Sends a request as [`call_with`](Self::call_with) does.
    fn start_call(
        &mut self,
        request: &Envelope,
        attachments: &[&[u8]],
        options: &CallOptions,
    ) -> Result<Pending, CallError> {
        // A timestamp and the worker type where the request has none, on the wire only.
        // (Compact frames carry no timestamp: the clock is not read for them.)
        let stamp = (request.timestamp.is_none()
            && self.conn.frame_header() == FrameHeader::Envelope)
            .then(Stamp::now);
        let fill = Fill {
            timestamp: stamp.as_ref().map(Stamp::as_str),
            worker_type: Some(&self.spec.worker_type),
        };
        let deadline = options.deadline_for(request);
        self.conn.start_filled(request, fill, attachments, deadline)
    }

    /// `result`, with a crashed worker's exit status when it ends within a moment.
    fn with_exit_status<T>(&mut self, result: Result<T, CallError>) -> Result<T, CallError> {
        match result {
            Err(CallError::WorkerCrashed { .. }) => Err(CallError::WorkerCrashed {
                status: CallError::status_text(self.exit_status_soon()),
            }),
            other => other,
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

    /// Stops the worker gracefully: the `shutdown` operation, then closing its input, then
    /// SIGTERM, then SIGKILL, each step after `shutdown_grace`. Always reaps the process.
    pub fn shutdown(mut self) -> Result<ExitStatus, CallError> {
        let grace = self.spec.shutdown_grace;
        if self.spec.dialect == Dialect::Ferry && self.conn.broken().is_none() {
            let request = Envelope::request("", OP_SHUTDOWN, Value::Null);
            let options = CallOptions {
                timeout: Some(grace),
            };
            if let Err(e) = self.call_with(request, &[], &options, |_| {}) {
                tracing::debug!(worker = %self.spec.worker_id, error = %e, "shutdown request failed");
            }
        }
        // Closing the connection closes the worker's input: the end-of-work signal every
        // stdin loop understands (the legacy dialect has no shutdown operation).
        self.conn.close();
        self.conn.close_sender();
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

    /// Kills the worker at once (SIGKILL), reaps it, and fails its pending requests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.conn.fail_all("worker killed");
    }
}

/// Prefix of the workers' private temp folders (`ferry-tmp-<host pid>-<random>`).
const TMPDIR_PREFIX: &str = "ferry-tmp-";

/// Makes the worker's private temp folder, first sweeping those that hosts killed before
/// they could remove them.
fn private_tmpdir(spec: &WorkerSpec) -> std::io::Result<PrivateDir> {
    let base = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "TMPDIR")
        .map(|(_, v)| std::path::PathBuf::from(v))
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    #[cfg(unix)]
    crate::transport::private_dir::remove_stale(&base, TMPDIR_PREFIX);
    PrivateDir::create(&base, TMPDIR_PREFIX)
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // No zombies: a worker dropped without `shutdown` is killed and reaped.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.conn.close();
        // Not joined: a grandchild may still hold the stderr pipe open; the thread ends
        // on its own when the last writer closes it.
        drop(self.stderr_thread.take());
    }
}
