//! `ferry call`: one request to one worker.

use clap::Args;
use ferry::codec::CodecKind;
use ferry::protocol::{Envelope, ErrorCode};
use ferry::transport::{Token, TransportKind};
use ferry::worker::{CallError, CallOptions, Dialect, WorkerProcess, WorkerSpec};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct CallArgs {
    /// Transport to the worker: stdio, socket (alias local_socket), tcp, shm.
    #[arg(long, default_value = "stdio", value_parser = parse_transport)]
    transport: TransportKind,
    /// socket: create the private socket directory under this directory.
    #[arg(long)]
    socket_dir: Option<std::path::PathBuf>,
    /// socket: use the Linux abstract namespace (nothing on disk).
    #[arg(long)]
    abstract_socket: bool,
    /// tcp: listen on this address (default 127.0.0.1 and a free port).
    #[arg(long)]
    tcp_listen: Option<std::net::SocketAddr>,
    /// tcp: the `host:port` the worker is told to connect to.
    #[arg(long)]
    tcp_advertise: Option<String>,
    /// socket, tcp: the token the worker must offer (default: a random one per worker).
    #[arg(long, env = "FERRY_CALL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// shm: data bytes of each ring (a power of two, 4 KiB to 1 GiB; default 4 MiB).
    #[arg(long)]
    shm_capacity: Option<usize>,
    /// shm: how a waiting end waits: adaptive (default), spin or block.
    #[arg(long, default_value = "adaptive", value_parser = parse_wait)]
    shm_wait: ferry::transport::shm::WaitStrategy,
    /// Codec for envelopes (stdio takes json only).
    #[arg(long, default_value = "json", value_parser = parse_codec)]
    codec: CodecKind,
    /// Message dialect: `ferry`, or `legacy` for the old six-line stdin/stdout workers.
    #[arg(long, default_value = "ferry", value_parser = parse_dialect)]
    dialect: Dialect,
    /// The worker command line, split like a shell would (default: the built-in Rust echo
    /// worker, `ferry worker echo`).
    #[arg(long)]
    cmd: Option<String>,
    /// Worker type announced to the worker.
    #[arg(long, default_value = "default")]
    worker_type: String,
    /// Give up on the request after this many milliseconds (a cancel is sent).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// How long the worker may take to send `ready`.
    #[arg(long, default_value_t = 30_000)]
    startup_timeout_ms: u64,
    /// Maximum frame size in bytes.
    #[arg(long, default_value_t = ferry::codec::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// The operation, e.g. `inference`.
    operation: String,
    /// The request data as JSON (default `{}`).
    data: Option<String>,
}

fn parse_transport(s: &str) -> Result<TransportKind, String> {
    s.parse()
        .map_err(|e: ferry::transport::TransportError| e.to_string())
}

fn parse_wait(s: &str) -> Result<ferry::transport::shm::WaitStrategy, String> {
    s.parse()
        .map_err(|e: ferry::transport::TransportError| e.to_string())
}

fn parse_codec(s: &str) -> Result<CodecKind, String> {
    s.parse()
        .map_err(|e: ferry::codec::CodecError| e.to_string())
}

fn parse_dialect(s: &str) -> Result<Dialect, String> {
    match s {
        "ferry" => Ok(Dialect::Ferry),
        "legacy" => Ok(Dialect::Legacy),
        other => Err(format!(
            "unknown dialect `{other}` (expected ferry or legacy)"
        )),
    }
}

fn fail(code: ErrorCode, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {code}: {message}");
    ExitCode::FAILURE
}

pub fn run(args: CallArgs) -> ExitCode {
    let data: Value = match args.data.as_deref() {
        None => Value::Object(Default::default()),
        Some(text) => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return fail(
                    ErrorCode::InvalidRequest,
                    format!("JSON_DATA is not valid JSON: {e}"),
                )
            }
        },
    };
    let (command, cmd_args) = match args.cmd.as_deref() {
        Some(line) => match shlex::split(line) {
            Some(mut words) if !words.is_empty() => {
                let command = words.remove(0);
                (command, words)
            }
            _ => {
                return fail(
                    ErrorCode::InvalidRequest,
                    format!("--cmd is not a valid command line: {line:?}"),
                )
            }
        },
        None => match std::env::current_exe() {
            Ok(exe) => (
                exe.display().to_string(),
                vec!["worker".into(), "echo".into()],
            ),
            Err(e) => {
                return fail(
                    ErrorCode::Internal,
                    format!("cannot locate the ferry binary: {e}"),
                )
            }
        },
    };
    let mut spec = WorkerSpec::new(args.worker_type, command, cmd_args);
    spec.transport = args.transport;
    spec.transport_options.local_socket.dir = args.socket_dir;
    spec.transport_options.local_socket.abstract_namespace = args.abstract_socket;
    spec.transport_options.tcp.listen = args.tcp_listen;
    spec.transport_options.tcp.advertise = args.tcp_advertise;
    if let Some(capacity) = args.shm_capacity {
        if !capacity.is_power_of_two() || !(4096..=1 << 30).contains(&capacity) {
            return fail(
                ErrorCode::InvalidRequest,
                "--shm-capacity: must be a power of two from 4096 to 1073741824 bytes",
            );
        }
        spec.transport_options.shm.capacity = capacity;
    }
    spec.transport_options.shm.wait = args.shm_wait;
    if let Some(text) = args.token {
        match Token::new(text) {
            Ok(token) => spec.transport_options.token = Some(token),
            Err(e) => return fail(ErrorCode::InvalidRequest, format!("--token: {e}")),
        }
    }
    spec.codec = args.codec;
    spec.dialect = args.dialect;
    spec.startup_timeout = Duration::from_millis(args.startup_timeout_ms);
    spec.max_frame = args.max_frame;
    let mut worker = match WorkerProcess::spawn(spec) {
        Ok(w) => w,
        Err(e) => return fail(e.code(), e),
    };
    let request = Envelope::request(String::new(), args.operation, data);
    let mut options = CallOptions::default();
    options.timeout = args.timeout_ms.map(Duration::from_millis);
    let result = worker.call_with(request, &[], &options, print_event);
    let exit = match result {
        Ok(response) => {
            match serde_json::to_string_pretty(&response.data) {
                Ok(text) => println!("{text}"),
                Err(e) => return fail(ErrorCode::Internal, e),
            }
            if !response.attachments.is_empty() {
                let sizes: Vec<usize> = response.attachments.iter().map(Vec::len).collect();
                eprintln!("attachments: {} ({sizes:?} bytes)", sizes.len());
            }
            ExitCode::SUCCESS
        }
        Err(CallError::Remote(body)) => fail(body.code, body.message),
        Err(e) => fail(e.code(), &e),
    };
    if let Err(e) = worker.shutdown() {
        tracing::debug!(error = %e, "worker shutdown");
    }
    exit
}

fn print_event(event: &Envelope) {
    let name = event.event_name.as_deref().unwrap_or("event");
    let data = event.data.as_ref().unwrap_or(&Value::Null);
    match (data.get("progress").and_then(Value::as_f64), name) {
        (Some(p), "progress") => {
            let stage = data.get("stage").and_then(Value::as_str).unwrap_or("");
            let message = data.get("message").and_then(Value::as_str).unwrap_or("");
            eprintln!("progress {:>3.0}% {stage}: {message}", p * 100.0);
        }
        _ => eprintln!("{name}: {data}"),
    }
}
