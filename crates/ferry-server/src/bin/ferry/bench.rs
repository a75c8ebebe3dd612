//! `ferry bench`: the benchmark suite, with progress on stderr, tables on stdout, and the
//! figures as JSON (and an SVG chart) on request.

use clap::Args;
use ferry::worker::WorkerSpec;
use ferry_bench::{Pin, Progress, SuiteOptions, Target, WorkerLang};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct BenchArgs {
    /// Transports, comma-separated: stdio, socket, tcp, shm, http (the old design's HTTP
    /// bridge), serve (POST /api/inference/generate to `ferry serve` over the Rust echo
    /// worker). Default: all (all but http and serve with --cmd); one this build lacks is
    /// reported as skipped.
    #[arg(long, value_parser = parse_targets)]
    transport: Option<Targets>,
    /// Echo workers, comma-separated: rust, python (skipped with a notice when no Python
    /// with ferry_worker is found; see FERRY_PYTHON). Default: both, or none with --cmd.
    #[arg(long, value_parser = parse_workers)]
    worker: Option<Workers>,
    /// Bench your own worker: its command line, split like a shell would (e.g. "python3
    /// my_worker.py"). It is started over each transport like the built-in workers and
    /// sent `echo` requests, which it must answer with the request's data and attachments
    /// unchanged; its rows have worker "cmd". Add --worker rust to compare.
    #[arg(long, value_parser = parse_cmd, value_name = "CMD")]
    cmd: Option<CmdLine>,
    /// With --cmd: the deadline of each request to the worker, in milliseconds. A worker
    /// that lets it pass fails the case with bench_no_answer (its other cases on that
    /// transport are not run).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    cmd_timeout_ms: u64,
    /// Payload sizes in bytes, comma-separated (suffixes k and m: 4k, 1m). Default: 64,
    /// 4k, 1m, and 16m on socket and shm.
    #[arg(long, value_parser = parse_payloads)]
    payload: Option<Payloads>,
    /// The frame header offered to the workers on socket, tcp and shm: compact (used when
    /// the worker accepts it) or envelope.
    #[arg(long, default_value = "compact", value_parser = parse_frame_header)]
    frame_header: ferry::protocol::FrameHeader,
    /// The framing offered to the stdio workers for after their ready line: lines (NDJSON,
    /// JSON) or length_prefixed (binary frames, MessagePack, raw attachments; used when
    /// the worker accepts it, the Rust and Python echo workers do).
    #[arg(long, default_value = "lines", value_parser = parse_stdio_framing)]
    stdio_framing: ferry::protocol::StdioFraming,
    /// How both ends of the engine's shm links wait: adaptive, spin or block.
    #[arg(long, default_value = "adaptive", value_parser = parse_shm_wait)]
    shm_wait: ferry::transport::shm::WaitStrategy,
    /// How the engine cases take each answer: owned (copied into a new Response, what
    /// `call_with` returns) or in_place (read where it was received with `call_in_place`,
    /// in the ring on shm, and copied into one kept buffer, as the floors do).
    #[arg(long, default_value = "owned")]
    answer: ferry_bench::Answer,
    /// The handler the Python echo worker answers with: plain (data as Python objects,
    /// attachments copied into bytes) or raw (data as JSON bytes, attachments lent as
    /// memoryviews over the receive buffer and echoed from there).
    #[arg(long, default_value = "plain")]
    python_echo: ferry_bench::PythonEcho,
    /// Timed round trips per case (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 2000)]
    iterations: u64,
    /// Stop a case's timed part after this many seconds (the count done is reported).
    #[arg(long, default_value_t = 2.0)]
    max_case_seconds: f64,
    /// Time the cases of each payload and pinning (floor, peers, workers) in turns over
    /// this many rounds, each case taking 1/ROUNDS of its round trips per turn with a
    /// peer started for the turn, so a machine that changes speed within the run slows
    /// a floor and the cases compared with it alike. 1: each case whole, in order.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    rounds: u16,
    /// Pinning: none (the scheduler decides), split (host and worker on two CPUs), same
    /// (both on one CPU).
    #[arg(long, default_value = "none", value_parser = parse_pin)]
    pin: Pin,
    /// Requests in flight for the pipelined-throughput cases (0: skip them).
    #[arg(long, default_value_t = 16)]
    pipelined: usize,
    /// Write every figure, the method and the machine description to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart of p50 by transport and payload to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone)]
struct Targets(Vec<Target>);
#[derive(Clone)]
struct Workers(Vec<WorkerLang>);
#[derive(Clone)]
struct Payloads(Vec<usize>);
#[derive(Clone)]
struct CmdLine {
    command: String,
    args: Vec<String>,
}

fn parse_cmd(s: &str) -> Result<CmdLine, String> {
    match shlex::split(s) {
        Some(mut words) if !words.is_empty() => {
            let command = words.remove(0);
            Ok(CmdLine {
                command,
                args: words,
            })
        }
        _ => Err(format!("not a valid command line: {s:?}")),
    }
}

fn parse_targets(s: &str) -> Result<Targets, String> {
    let list = Target::parse_list(s).map_err(|e| e.to_string())?;
    if list.is_empty() {
        return Err("no transport named".into());
    }
    Ok(Targets(list))
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    let mut list = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let w: WorkerLang = name
            .parse()
            .map_err(|e: ferry_bench::BenchError| e.to_string())?;
        if !list.contains(&w) {
            list.push(w);
        }
    }
    if list.is_empty() {
        return Err("no worker named".into());
    }
    Ok(Workers(list))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches("ib").trim_end_matches('b') {
        d if d.ends_with('k') => (&d[..d.len() - 1], 1usize << 10),
        d if d.ends_with('m') => (&d[..d.len() - 1], 1 << 20),
        d => (d, 1),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("bad payload size `{s}` (bytes, or with k / m)"))?;
    match n.checked_mul(unit) {
        Some(0) | None => Err(format!("bad payload size `{s}`")),
        Some(v) => Ok(v),
    }
}

fn parse_payloads(s: &str) -> Result<Payloads, String> {
    let sizes = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    if sizes.is_empty() {
        return Err("no payload size named".into());
    }
    Ok(Payloads(sizes))
}

fn parse_pin(s: &str) -> Result<Pin, String> {
    s.parse()
        .map_err(|e: ferry_bench::BenchError| e.to_string())
}

/// Writes progress to stderr: one line per case, updated in place on a terminal.
struct ProgressLine {
    tty: bool,
    current: String,
}

impl ProgressLine {
    fn show(&mut self, event: Progress<'_>) {
        let mut err = std::io::stderr().lock();
        match event {
            Progress::Notice(text) => {
                let _ = writeln!(err, "notice: {text}");
            }
            Progress::Start {
                index,
                total,
                label,
            } => {
                self.current = format!("[{index}/{total}] {label}");
                if self.tty {
                    let _ = write!(err, "{} ...", self.current);
                } else {
                    let _ = writeln!(err, "{} ...", self.current);
                }
            }
            Progress::Tick { done, of } if self.tty => {
                let _ = write!(err, "\r\x1b[2K{} ... {done}/{of}", self.current);
            }
            Progress::Tick { .. } => {}
            Progress::Done(summary) => {
                if self.tty {
                    let _ = write!(err, "\r\x1b[2K");
                }
                let _ = writeln!(err, "{}", summary);
            }
        }
        let _ = err.flush();
    }
}

pub fn run(args: BenchArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find the ferry executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = SuiteOptions::new(exe);
    if args.cmd.is_some() {
        // The user's worker beside the floors; the HTTP baseline is the old design's
        // Python worker, not theirs, and `serve` runs the Rust echo worker.
        options
            .targets
            .retain(|t| !matches!(t, Target::Http | Target::Serve));
        options.workers.clear();
    }
    if let Some(Targets(t)) = args.transport {
        options.targets = t;
    }
    if let Some(Workers(w)) = args.worker {
        options.workers = w;
    }
    if let Some(cmd) = args.cmd {
        options.workers.push(WorkerLang::Cmd);
        options.cmd = Some(WorkerSpec::new("echo", cmd.command, cmd.args));
        options.cmd_timeout = Duration::from_millis(args.cmd_timeout_ms);
    }
    options.payloads = args.payload.map(|Payloads(p)| p);
    options.iterations = args.iterations.max(1);
    options.frame_header = args.frame_header;
    options.stdio_framing = args.stdio_framing;
    options.shm_wait = args.shm_wait;
    options.answer = args.answer;
    options.python_echo = args.python_echo;
    options.max_case_time = Duration::from_secs_f64(args.max_case_seconds.max(0.0));
    options.pin = args.pin;
    options.pipelined_depth = args.pipelined;
    options.rounds = usize::from(args.rounds);
    let mut progress = ProgressLine {
        tty: std::io::stderr().is_terminal(),
        current: String::new(),
    };
    let report = match ferry_bench::run(&options, &mut |e| progress.show(e)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.render());
    if let Some(path) = &args.json {
        let written = report
            .to_json()
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        match written {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.plot {
        let svg = ferry_bench::p50_chart(&report, options.pin);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} case(s) failed (listed above)",
            report.failures.len()
        );
        ExitCode::FAILURE
    }
}

fn parse_stdio_framing(s: &str) -> Result<ferry::protocol::StdioFraming, String> {
    s.parse()
        .map_err(|e: ferry::protocol::UnknownStdioFraming| e.to_string())
}

fn parse_frame_header(s: &str) -> Result<ferry::protocol::FrameHeader, String> {
    s.parse()
        .map_err(|e: ferry::protocol::UnknownFrameHeader| e.to_string())
}

fn parse_shm_wait(s: &str) -> Result<ferry::transport::shm::WaitStrategy, String> {
    s.parse()
        .map_err(|e: ferry::transport::TransportError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn cmd_is_split_like_a_shell() {
        let cmd = parse_cmd("python3 'my worker.py' --fast").unwrap();
        assert_eq!(cmd.command, "python3");
        assert_eq!(cmd.args, ["my worker.py", "--fast"]);
        assert!(parse_cmd("").is_err());
        assert!(parse_cmd("python3 'unclosed").is_err());
    }
}
