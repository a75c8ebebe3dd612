//! `ferry.toml`: worker types, workflows and the HTTP server.
//!
//! Every key and its default is documented in `docs/configuration.md`. A file is refused
//! with the key, the line and the reason ([`ConfigError`]).
//!
//! ```
//! let text = r#"
//! [workers.echo]
//! command = "@ferry"
//! args = ["worker", "echo"]
//! [workers.echo.pool]
//! max_workers = 2
//! "#;
//! let config = ferry_server::config::FerryConfig::parse(text, "ferry.toml")?;
//! assert_eq!(config.workers["echo"].pool.max_workers, 2);
//! assert_eq!(config.server.bind, "127.0.0.1:8080");
//! # Ok::<(), ferry_server::config::ConfigError>(())
//! ```

mod lines;
mod pool;
mod sdxl;
mod state;
mod validate;

pub use pool::{Devices, PoolSection};
pub use state::{StateConfig, DEFAULT_SQLITE_FILE};

use ferry::codec::{CodecKind, DEFAULT_MAX_FRAME};
use ferry::protocol::Priority;
use ferry::transport::shm::WaitStrategy;
use ferry::transport::TransportKind;
use ferry::worker::{Dialect, WorkerSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The command name that stands for the running `ferry` executable.
pub const SELF_COMMAND: &str = "@ferry";

/// A configuration that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}: {key}: {reason}", line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
pub struct ConfigError {
    /// The file (as given).
    pub file: String,
    /// The 1-based line, when it can be told.
    pub line: Option<usize>,
    /// The key, dotted (`workers.echo.pool.max_workers`).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FerryConfig {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Worker types by name.
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerTypeConfig>,
    /// Workflows.
    #[serde(default)]
    pub workflows: Vec<WorkflowConfig>,
    /// Caps on what HTTP clients may make the server hold.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Style presets and the quality boost of the SDXL routes (`[sdxl]`).
    #[serde(default)]
    pub sdxl: crate::sdxl::SdxlConfig,
    /// Where job state lives (`[state]`).
    #[serde(default)]
    pub state: StateConfig,
}

/// `[limits]`: caps on what clients may make the server keep in memory. A request that
/// would go past one is refused with `429 limit_reached` (and succeeds again once
/// batches or sessions finish, or workflows are deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Batches not yet finished (pending or running).
    pub open_batches: usize,
    /// Bytes of item data (as JSON) held by unfinished batches, all together.
    pub open_batch_bytes: usize,
    /// Sessions not yet finished (running or paused).
    pub open_sessions: usize,
    /// Bytes of input (as JSON) held by unfinished sessions, all together.
    pub open_session_bytes: usize,
    /// Workflows created through the API.
    pub api_workflows: usize,
    /// Bytes (as JSON) of the workflows created through the API, all together.
    pub api_workflow_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            open_batches: 64,
            open_batch_bytes: 64 << 20,
            open_sessions: 256,
            open_session_bytes: 64 << 20,
            api_workflows: 64,
            api_workflow_bytes: 1 << 20,
        }
    }
}

/// Operations HTTP clients may never call: the protocol's built-ins, which the runtime
/// answers itself (`shutdown` would stop the worker), whatever a worker type's
/// `api_operations` says.
pub const BUILT_IN_OPERATIONS: [&str; 3] = ["health", "capabilities", "shutdown"];

/// Operations (or `prefix.*` families) that are administrative by convention: refused
/// over HTTP unless a worker type's `api_operations` names them exactly.
/// The old system's names for administrative operations (`load_model`, `status_request`,
/// ...) are administrative too.
pub const ADMIN_OPERATIONS: [&str; 8] = [
    "cleanup",
    "status",
    "model.*",
    "device.*",
    "load_model",
    "model_load",
    "model_load_request",
    "status_request",
];

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// Bearer token every `/api` request must carry (`Authorization: Bearer ...`); none
    /// when empty.
    pub token: String,
    /// Name of an environment variable holding the token (used when `token` is empty).
    pub token_env: String,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// How long `ferry serve` waits for in-flight requests on SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// The worker type the `/api/sdxl/enhanced/*` routes call.
    pub sdxl_worker_type: String,
    /// Sessions and batches kept after they end (the oldest are dropped beyond this).
    pub keep_finished: usize,
    /// How long a request head (request line and headers) may take to arrive, from its
    /// first byte; the connection is closed without an answer past it.
    pub header_timeout_ms: u64,
    /// How long a request body may take to arrive in full, from the end of the head
    /// (`408 request_timeout` past it).
    pub body_timeout_ms: u64,
    /// How long a connection may wait for the first byte of a request (a new connection,
    /// or a kept-alive one between requests) before it is closed.
    pub idle_timeout_ms: u64,
    /// Connections served at once; beyond it, `health_connections` more serve only
    /// `/health`, and further ones are answered `503 overloaded` and closed.
    pub max_connections: usize,
    /// Connections kept beyond `max_connections` for `/health` and `/health/*` only.
    pub health_connections: usize,
    /// Longest request target (path and query), in bytes (`414 uri_too_long` beyond).
    pub max_uri_bytes: usize,
    /// Largest total of the request headers (names, values and 4 bytes each), in bytes
    /// (`431 headers_too_large` beyond).
    pub max_header_bytes: usize,
    /// Serve `/metrics` without the bearer token even when one is configured.
    pub public_metrics: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            token: String::new(),
            token_env: String::new(),
            body_limit_bytes: 16 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            sdxl_worker_type: "sdxl".into(),
            keep_finished: 1_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            max_connections: 1_024,
            health_connections: 16,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            public_metrics: false,
        }
    }
}

impl ServerConfig {
    /// The bearer token in force, if any.
    pub fn effective_token(&self) -> Option<String> {
        if !self.token.is_empty() {
            return Some(self.token.clone());
        }
        if self.token_env.is_empty() {
            return None;
        }
        std::env::var(&self.token_env)
            .ok()
            .filter(|t| !t.is_empty())
    }
}

/// `[workers.NAME]`: one worker type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTypeConfig {
    /// The program (`@ferry` is the running ferry executable; a relative path is taken
    /// from the configuration file's folder).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment (`CUDA_VISIBLE_DEVICES`, `GPU_ID`, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (relative: from the configuration file's folder).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Transport.
    #[serde(default)]
    pub transport: TransportKind,
    /// Codec.
    #[serde(default)]
    pub codec: CodecKind,
    /// Dialect.
    #[serde(default)]
    pub dialect: Dialect,
    /// The frame header offered on framed transports (`compact`, the default, or
    /// `envelope`); used only when the worker accepts it.
    #[serde(default)]
    pub frame_header: ferry::protocol::FrameHeader,
    /// `stdio`: the framing offered for after the worker's `ready` line: `lines` (the
    /// default, NDJSON throughout) or `length_prefixed` (binary frames in `codec`, with raw
    /// attachments, used only when the worker accepts; the `ready` line and a worker that
    /// ignores the offer stay on JSON lines).
    #[serde(default)]
    pub stdio_framing: ferry::protocol::StdioFraming,
    /// How long a worker may take to send `ready`.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// How long each shutdown step waits.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Largest frame, both directions.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// `socket`: where the private socket directories are made (default
    /// `$XDG_RUNTIME_DIR`, else the temp dir).
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    /// `socket`: use the Linux abstract namespace (nothing on disk).
    #[serde(default)]
    pub abstract_socket: bool,
    /// `tcp`: the address the host listens on (default `127.0.0.1:0`).
    #[serde(default)]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// `tcp`: the address the worker is told to connect to (default: the listening one).
    #[serde(default)]
    pub tcp_advertise: Option<String>,
    /// `socket`, `tcp`: a fixed token workers must offer (default: a random one per worker).
    #[serde(default)]
    pub token: Option<String>,
    /// `tcp`: PEM file of the certificate chain the host presents, leaf first; with
    /// `tls_key`, every worker connection is TLS (relative: from the configuration file's
    /// folder).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// `tcp`: PEM file of the private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// `tcp` with TLS: PEM file of the certificates spawned workers trust (default:
    /// `tls_cert` itself, for a self-signed certificate).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// `tcp` with TLS: the name spawned workers verify the certificate for (default: the
    /// host part of the address they connect to).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `shm`: data bytes of each of the two rings (a power of two from 4 KiB to 1 GiB;
    /// default 4 MiB).
    #[serde(default)]
    pub shm_capacity: Option<usize>,
    /// `shm`: how a waiting end waits: `adaptive` (default), `spin` or `block`.
    #[serde(default)]
    pub shm_wait: WaitStrategy,
    /// `shm`, adaptive: the longest spin of one wait while the peer runs on another CPU, at
    /// first (it grows up to 20 times this while answers keep coming just after it)
    /// (default 50).
    #[serde(default)]
    pub shm_spin_us: Option<u64>,
    /// `shm`, adaptive: the longest yielding after the spin while the peer is awake
    /// (default 50).
    #[serde(default)]
    pub shm_yield_us: Option<u64>,
    /// `shm`: how long a send may wait for ring space before failing (default: no limit;
    /// the deadline of the call still applies).
    #[serde(default)]
    pub shm_send_timeout_ms: Option<u64>,
    /// Operations HTTP clients may call on this type (`/api/inference/*`, API-made
    /// workflows and batches): exact names, `prefix.*` for a family, or `*` for any.
    /// Default (absent): any operation but the administrative ones
    /// ([`ADMIN_OPERATIONS`]). The built-ins ([`BUILT_IN_OPERATIONS`]) are never allowed;
    /// an administrative operation only when named exactly. Workflows from the
    /// configuration file are trusted and not checked.
    #[serde(default)]
    pub api_operations: Option<Vec<String>>,
    /// The pool's settings.
    #[serde(default)]
    pub pool: PoolSection,
}

fn default_startup_timeout_ms() -> u64 {
    30_000
}
fn default_shutdown_grace_ms() -> u64 {
    5_000
}
fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}

/// `[[workflows]]`: ordered steps, each a call to a worker type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Unique id, used in URLs.
    pub id: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// The steps, run in order.
    pub steps: Vec<StepConfig>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Unique within the workflow; later steps refer to it as `$steps.NAME`.
    pub name: String,
    /// The worker type to call.
    pub worker_type: String,
    /// The operation.
    pub operation: String,
    /// The request data, as a template: any string `"$request..."`, `"$previous..."` or
    /// `"$steps.NAME..."` (then `.field` or `.0` path segments) is replaced by that value.
    /// Default: `"$previous"` (the previous step's output; the request for the first step).
    #[serde(default = "default_input")]
    pub input: serde_json::Value,
    /// Pass the attachments of this earlier step (or `request`) along.
    #[serde(default)]
    pub attachments_from: Option<String>,
    /// Run the step once per element of this list (a reference: `"$request.prompts"`), the
    /// template seeing the element as `$item` and its index as `$index`; the step's output
    /// is the list of the outputs, its attachments those of every run, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// Priority of this step's request.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Deadline of this step's request.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

fn default_input() -> serde_json::Value {
    serde_json::Value::String("$previous".into())
}

impl FerryConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&text, &file)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        // Files named in the configuration are read once their paths are resolved.
        validate::files(&config).map_err(|(key, reason)| ConfigError {
            file: file.clone(),
            line: lines::line_of_key(&text, &key),
            key,
            reason,
        })?;
        Ok(config)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: FerryConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: e.span().map(|s| lines::line_of_offset(text, s.start)),
            key: lines::key_of_parse_error(&e),
            reason: e.message().to_owned(),
        })?;
        validate::validate(&config)
            .and_then(|()| sdxl::validate(&config.sdxl))
            .and_then(|()| config.state.validate())
            .map_err(|(key, reason)| ConfigError {
                file: file.to_owned(),
                line: lines::line_of_key(text, &key),
                key,
                reason,
            })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.state.resolve_paths(base);
        for w in self.workers.values_mut() {
            let is_relative_path = w.command.contains('/') && !Path::new(&w.command).is_absolute();
            if is_relative_path {
                w.command = base.join(&w.command).display().to_string();
            }
            if let Some(cwd) = &w.cwd {
                if cwd.is_relative() {
                    w.cwd = Some(base.join(cwd));
                }
            }
            for path in [&mut w.tls_cert, &mut w.tls_key, &mut w.tls_ca]
                .into_iter()
                .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

/// Whether `name` matches `pattern` (an exact name, `prefix.*`, or `*`).
fn operation_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => name.starts_with(prefix),
        _ => pattern == name,
    }
}

impl WorkerTypeConfig {
    /// The TLS settings of a `tcp` worker type: `Some` when `tls_cert` and `tls_key` are
    /// set.
    pub fn tls_options(&self) -> Option<ferry::transport::tls::TlsOptions> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return None;
        };
        let mut tls = ferry::transport::tls::TlsOptions::new(cert, key);
        if let Some(ca) = &self.tls_ca {
            tls = tls.trust(ca);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.server_name(name);
        }
        Some(tls)
    }

    /// Whether HTTP clients may call `operation` on this worker type (see
    /// [`api_operations`](Self::api_operations)).
    ///
    /// ```
    /// use ferry_server::config::FerryConfig;
    /// let c = FerryConfig::parse("[workers.w]\ncommand = \"w\"\n", "t")?;
    /// let w = &c.workers["w"];
    /// assert!(w.allows_api_operation("echo"));
    /// assert!(!w.allows_api_operation("shutdown"));
    /// assert!(!w.allows_api_operation("model.load"));
    /// # Ok::<(), ferry_server::config::ConfigError>(())
    /// ```
    pub fn allows_api_operation(&self, operation: &str) -> bool {
        if operation.is_empty() || BUILT_IN_OPERATIONS.contains(&operation) {
            return false;
        }
        let admin = ADMIN_OPERATIONS
            .iter()
            .any(|p| operation_matches(p, operation));
        match &self.api_operations {
            None => !admin,
            Some(allowed) if admin => allowed.iter().any(|p| p == operation),
            Some(allowed) => allowed.iter().any(|p| operation_matches(p, operation)),
        }
    }

    /// The operations of [`api_operations`](Self::api_operations) named exactly (no
    /// patterns): the names metrics keep a series for.
    pub fn exact_api_operations(&self) -> impl Iterator<Item = &str> {
        self.api_operations
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|p| !p.ends_with('*'))
    }

    /// The spec a pool starts this type's workers from.
    pub fn spec(&self, worker_type: &str) -> WorkerSpec {
        let command = if self.command == SELF_COMMAND {
            std::env::current_exe().map_or_else(|_| "ferry".to_owned(), |p| p.display().to_string())
        } else {
            self.command.clone()
        };
        let mut spec = WorkerSpec::new(worker_type, command, self.args.clone());
        spec.env = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.cwd = self.cwd.clone();
        spec.transport = self.transport;
        spec.codec = self.codec;
        spec.dialect = self.dialect;
        spec.frame_header = self.frame_header;
        spec.stdio_framing = self.stdio_framing;
        spec.startup_timeout = Duration::from_millis(self.startup_timeout_ms);
        spec.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        spec.max_frame = self.max_frame;
        spec.transport_options.local_socket.dir = self.socket_dir.clone();
        spec.transport_options.local_socket.abstract_namespace = self.abstract_socket;
        spec.transport_options.tcp.listen = self.tcp_listen;
        spec.transport_options.tcp.advertise = self.tcp_advertise.clone();
        // Validated at load: a token that fails here was refused there.
        spec.transport_options.token = self
            .token
            .clone()
            .and_then(|t| ferry::transport::Token::new(t).ok());
        spec.transport_options.tcp.tls = self.tls_options();
        let shm = &mut spec.transport_options.shm;
        if let Some(capacity) = self.shm_capacity {
            shm.capacity = capacity;
        }
        shm.wait = self.shm_wait;
        if let Some(us) = self.shm_spin_us {
            shm.spin = Duration::from_micros(us);
        }
        if let Some(us) = self.shm_yield_us {
            shm.yield_time = Duration::from_micros(us);
        }
        shm.send_timeout = self.shm_send_timeout_ms.map(Duration::from_millis);
        spec
    }
}
