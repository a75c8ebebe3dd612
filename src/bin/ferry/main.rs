//! The `ferry` command: call workers, run the built-in echo worker.

mod call;

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
    Call(call::CallArgs),
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

// The variants are the subcommands' names (`pipe-echo`, `shm-echo`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum FloorKind {
    /// Echo fixed-size messages from stdin to stdout.
    PipeEcho {
        /// Message size in bytes.
        size: usize,
    },
    /// Echo messages over the bare spinning shared-memory ring (FERRY_SHM_FD).
    ShmEcho,
    /// Echo frames over the shm transport with no engine (FERRY_SHM_FD).
    ShmFrameEcho {
        /// Maximum frame size in bytes.
        #[arg(long, default_value_t = ferry::codec::DEFAULT_MAX_FRAME)]
        max_frame: usize,
    },
}

#[derive(Subcommand)]
enum WorkerKind {
    /// The Rust echo worker: operations echo, sleep, fail, print.
    Echo,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ferry::worker::stderr=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Call(args) => call::run(args),
        Command::Floor {
            kind: FloorKind::ShmFrameEcho { max_frame },
        } => match ferry::floor::shm_frame_echo(max_frame) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Floor {
            kind: FloorKind::ShmEcho,
        } => match ferry::floor::shm_echo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Floor {
            kind: FloorKind::PipeEcho { size },
        } => match ferry::floor::pipe_echo(size) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Worker {
            kind: WorkerKind::Echo,
        } => {
            match ferry::worker::serve(
                "echo",
                &ferry::worker::echo::OPERATIONS,
                ferry::worker::echo::handle,
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
