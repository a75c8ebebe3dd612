//! What the host needs to start one worker.

use crate::codec::{CodecKind, DEFAULT_MAX_FRAME};
use crate::protocol::Dialect;
use crate::transport::{Transport, TransportKind, TransportOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
