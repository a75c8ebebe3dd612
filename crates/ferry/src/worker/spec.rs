//! What the host needs to start one worker.

use crate::codec::{CodecKind, DEFAULT_MAX_FRAME};
use crate::protocol::{Dialect, FrameHeader, StdioFraming};
use crate::transport::{Transport, TransportKind, TransportOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[non_exhaustive]
/// How to start one worker process and reach it.
///
/// ```
/// use ferry::worker::WorkerSpec;
/// let spec = WorkerSpec::new("sdxl", "python3", ["-m", "ferry_sdxl.main"])
///     .env("CUDA_VISIBLE_DEVICES", "0");
/// assert_eq!(spec.args, ["-m", "ferry_sdxl.main"]);
/// ```
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The worker type, e.g. `sdxl`.
    pub worker_type: String,
    /// This worker's id, used to tag its log lines.
    pub worker_id: String,
    /// The program to run (looked up on `PATH` if not a path).
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the host's).
    pub cwd: Option<PathBuf>,
    /// The transport.
    pub transport: TransportKind,
    /// Settings of the transport beyond its kind.
    pub transport_options: TransportOptions,
    /// The codec.
    pub codec: CodecKind,
    /// The dialect.
    pub dialect: Dialect,
    /// The frame header offered on a framed link (`FERRY_FRAME_HEADER`): compact by
    /// default, used only when the worker accepts it in `ready`.
    pub frame_header: FrameHeader,
    /// stdio only: the framing offered for after the worker's `ready` line
    /// (`FERRY_STDIO_FRAMING`). [`StdioFraming::LengthPrefixed`] offers length-prefixed
    /// frames in `codec` (`FERRY_STDIO_CODEC`; `FERRY_CODEC` is then `json`, for the
    /// `ready` line and a worker that keeps lines); used only when the worker accepts.
    /// Default: [`StdioFraming::Lines`], no offer.
    pub stdio_framing: StdioFraming,
    /// How long the worker may take to send `ready`.
    pub startup_timeout: Duration,
    /// How long `shutdown` waits at each step (answer, exit after SIGTERM) before escalating.
    pub shutdown_grace: Duration,
    /// The maximum frame size, both directions.
    pub max_frame: usize,
    /// Give the worker a private temp folder (`TMPDIR`, `TMP`, `TEMP` and
    /// `FERRY_TMPDIR`, mode 0700 under the host's temp dir, or under the spec's own
    /// `TMPDIR` when `env` sets one), removed when the worker ends, however it ends
    /// (default: on).
    pub private_tmpdir: bool,
    /// A transport defined outside ferry; when set, it is used instead of `transport`
    /// (which then only matters to code that reads it). See
    /// [`custom_transport`](Self::custom_transport).
    pub custom_transport: Option<Arc<dyn Transport>>,
}

impl WorkerSpec {
    /// A spec with defaults: stdio, JSON, ferry dialect, 30 s startup timeout.
    pub fn new<I, S>(worker_type: impl Into<String>, command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let worker_type = worker_type.into();
        WorkerSpec {
            worker_id: format!("{worker_type}-0"),
            worker_type,
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            transport: TransportKind::Stdio,
            transport_options: TransportOptions::default(),
            codec: CodecKind::Json,
            dialect: Dialect::Ferry,
            frame_header: FrameHeader::default(),
            stdio_framing: StdioFraming::default(),
            startup_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            private_tmpdir: true,
            custom_transport: None,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl WorkerSpec {
    /// Reaches the worker by `transport`, a [`Transport`] implemented outside ferry, instead
    /// of a built-in one. Its worker builds the other end of the link itself and serves it
    /// with [`serve_link`](crate::worker::serve_link). See `docs/transports.md`, "Writing
    /// your own transport", and [`Transport`] for an example.
    pub fn custom_transport(mut self, transport: impl Transport + 'static) -> Self {
        self.custom_transport = Some(Arc::new(transport));
        self
    }

    /// The transport the worker is reached by: the custom one if set, else the built-in
    /// `transport`.
    ///
    /// ```
    /// use ferry::worker::WorkerSpec;
    /// let spec = WorkerSpec::new("echo", "ferry", ["worker", "echo"]);
    /// assert_eq!(spec.effective_transport().name(), "stdio");
    /// ```
    pub fn effective_transport(&self) -> &dyn Transport {
        match &self.custom_transport {
            Some(custom) => custom.as_ref(),
            None => &self.transport,
        }
    }
}

/// Builder methods: each sets one field and returns the spec.
///
/// ```
/// use ferry::prelude::*;
/// use ferry::transport::shm::ShmOptions;
/// use std::time::Duration;
///
/// let spec = WorkerSpec::new("echo", ".venv/bin/python", ["-m", "ferry_worker.echo"])
///     .shm(ShmOptions::default())
///     .codec(CodecKind::MsgPack)
///     .startup_timeout(Duration::from_secs(10))
///     .env("PYTHONUNBUFFERED", "1")
///     .arg("--verbose");
/// assert_eq!(spec.transport, TransportKind::Shm);
/// assert_eq!(spec.args, ["-m", "ferry_worker.echo", "--verbose"]);
/// ```
impl WorkerSpec {
    /// Sets the worker id (default `<worker_type>-0`; a pool names its workers itself).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the transport (default stdio). A binary codec needs a framed one (not stdio).
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the transport's settings beyond its kind.
    pub fn transport_options(mut self, options: TransportOptions) -> Self {
        self.transport_options = options;
        self
    }

    /// Uses the `shm` transport with these settings (`ShmOptions::default()`: 4 MiB rings,
    /// adaptive waiting).
    pub fn shm(mut self, options: crate::transport::shm::ShmOptions) -> Self {
        self.transport = TransportKind::Shm;
        self.transport_options.shm = options;
        self
    }

    /// Sets the codec (default JSON).
    pub fn codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the dialect (default ferry).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Sets how long the worker may take to send `ready` (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets how long each shutdown step waits before escalating (default 5 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the maximum frame size, both directions (default 64 MiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Gives the worker a private temp folder or not (default on).
    pub fn private_tmpdir(mut self, on: bool) -> Self {
        self.private_tmpdir = on;
        self
    }
}
