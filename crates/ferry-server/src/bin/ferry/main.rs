//! The `ferry` command: call workers, run the built-in echo worker.

mod bench;
mod call;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Low-latency IPC engine for worker processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a worker, send it one request, print the response's data as JSON.
    Call(Box<call::CallArgs>),
    /// Run the worker pools and the HTTP API from a configuration file.
    Serve(serve::ServeArgs),
    /// Validate a configuration file without starting anything.
    Check(serve::CheckArgs),
    /// Measure round trips per transport and payload beside the bare floors; print
    /// tables, optionally write JSON and an SVG chart.
    Bench(bench::BenchArgs),
    /// Run a built-in worker (spawned by a host; speaks the protocol on stdin/stdout).
    Worker {
        #[command(subcommand)]
        kind: WorkerKind,
    },
    /// Bare peers with no engine, the floor benchmarks compare against.
    #[command(hide = true)]
    Floor {
        #[command(subcommand)]
        kind: FloorKind,
    },
}

#[derive(Subcommand)]
// Why: the variant names are the subcommand names (`pipe-echo`, `uds-echo`, ...).
#[allow(clippy::enum_variant_names)]
enum FloorKind {
    /// Echo fixed-size messages from stdin to stdout.
    PipeEcho {
        /// Message size in bytes.
        size: usize,
    },
    /// Connect to a Unix domain socket and echo fixed-size messages.
    #[cfg(unix)]
    UdsEcho {
        /// Message size in bytes.
        size: usize,
        /// The socket's path.
        path: String,
    },
    /// Connect over TCP (TCP_NODELAY) and echo fixed-size messages.
    TcpEcho {
        /// Message size in bytes.
        size: usize,
        /// The host's address, `host:port`.
        addr: String,
    },
    /// Echo messages over the bare spinning shared-memory ring (FERRY_SHM_FD).
    ShmEcho,
    /// Echo frames over the shm transport with no engine (FERRY_SHM_FD).
    ShmFrameEcho {
        /// Maximum frame size in bytes.
        #[arg(long, default_value_t = ferry::codec::DEFAULT_MAX_FRAME)]
        max_frame: usize,
    },
    /// Echo byte slices over the iceoryx2 services PREFIX/ping and PREFIX/pong (a peer,
    /// not a floor; only in builds with the `iceoryx2` feature).
    Iceoryx2Echo {
        /// Message size in bytes.
        size: usize,
        /// The services' name prefix.
        prefix: String,
    },
}

#[derive(Subcommand)]
enum WorkerKind {
    /// The Rust echo worker: operations echo, sleep, fail, print.
    Echo,
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs its lifecycle; one-shot commands only warnings and worker output.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn,ferry::worker::stderr=info",
    };
    init_logging(default_filter);
    match cli.command {
        Command::Call(args) => call::run(*args),
        Command::Serve(args) => serve::serve(args),
        Command::Check(args) => serve::check(args),
        Command::Bench(args) => bench::run(args),
        Command::Floor { kind } => {
            let result: Result<(), Box<dyn std::error::Error>> = match kind {
                FloorKind::PipeEcho { size } => {
                    ferry_bench::floor::pipe_echo(size).map_err(Into::into)
                }
                #[cfg(unix)]
                FloorKind::UdsEcho { size, path } => {
                    ferry_bench::floor::uds_echo(size, &path).map_err(Into::into)
                }
                FloorKind::TcpEcho { size, addr } => {
                    ferry_bench::floor::tcp_echo(size, &addr).map_err(Into::into)
                }
                FloorKind::ShmEcho => ferry_bench::floor::shm_echo().map_err(Into::into),
                FloorKind::ShmFrameEcho { max_frame } => {
                    ferry_bench::floor::shm_frame_echo(max_frame).map_err(Into::into)
                }
                FloorKind::Iceoryx2Echo { size, prefix } => {
                    ferry_bench::peer_iceoryx2::echo(size, &prefix).map_err(Into::into)
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Worker {
            kind: WorkerKind::Echo,
        } => {
            match ferry::worker::serve(
                "echo",
                &ferry::worker::echo::OPERATIONS,
                ferry::worker::echo::Echo,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
