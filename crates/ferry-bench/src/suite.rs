//! The whole run behind `ferry bench`: plan the cases, measure each beside its floor, and
//! collect the report.

use super::engine::{codec_for_framing, echo_spec, EnginePeer, WorkerLang};
use super::floors::FloorKind;
use super::http::HttpPeer;
use super::interleave::{self, Turns};
use super::machine::Machine;
use super::measure::{measure, Limits, Stats};
use super::peers::PeerKind;
use super::pin::{Pin, Placement};
use super::pipelined::pipelined;
use super::plan::{plan, Case, Plan, Step, PIPELINED_MAX_PAYLOAD};
use super::report::{
    CaseResult, FloorResult, Method, PeerResult, PipelinedResult, Report, Skipped,
};
use super::serve::{worker_transport, ServePeer};
use super::target::Target;
use super::{payload, BenchError, RoundTrip};
use ferry::transport::TransportKind;
use ferry::worker::WorkerSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The `ferry` executable: the Rust echo worker and the floor peers are its
    /// subcommands.
    pub ferry_exe: PathBuf,
    /// Transports, in order.
    pub targets: Vec<Target>,
    /// Echo workers of the engine transports (the HTTP baseline is always Python).
    /// [`WorkerLang::Cmd`] runs [`cmd`](Self::cmd).
    pub workers: Vec<WorkerLang>,
    /// The command line of the [`WorkerLang::Cmd`] worker, any worker that answers
    /// `echo` (its transport and codec are set per case, like the built-in workers').
    pub cmd: Option<WorkerSpec>,
    /// The deadline of each request to the cmd worker: one that passes fails the case
    /// with [`BenchError::NoAnswer`].
    pub cmd_timeout: Duration,
    /// Payload sizes for every transport; `None`: [`default_payloads`](super::default_payloads) per transport.
    pub payloads: Option<Vec<usize>>,
    /// Timed round trips per case.
    pub iterations: u64,
    /// The time limit of one case's timed part.
    pub max_case_time: Duration,
    /// Pinning of every case (the same-core extra cases aside).
    pub pin: Pin,
    /// Requests in flight in the pipelined cases; 0 or 1 measures none.
    pub pipelined_depth: usize,
    /// The frame header offered to the engine's workers on framed transports (compact by
    /// default; `envelope` measures the envelope frames of workers that decline it).
    pub frame_header: ferry::protocol::FrameHeader,
    /// The framing offered to the engine's stdio workers for after `ready`: `lines`
    /// (NDJSON, JSON codec, the default) or `length_prefixed` (binary frames, MessagePack,
    /// raw attachments, when the worker accepts; the Rust and Python echo workers do).
    pub stdio_framing: ferry::protocol::StdioFraming,
    /// How both ends of the engine's shm links wait (adaptive by default).
    pub shm_wait: ferry::transport::shm::WaitStrategy,
    /// How the engine cases take each answer (owned by default).
    pub answer: crate::Answer,
    /// The handler the Python echo worker serves `echo` with (plain by default).
    pub python_echo: crate::PythonEcho,
    /// Rounds in which the cases of each payload and pinning (floor, peers, workers) are
    /// timed in turns, each case taking `1 / rounds` of its round trips per turn with a
    /// peer started for it; 1 (the default) times each case whole, one after the other.
    pub rounds: usize,
}

impl SuiteOptions {
    /// The defaults of `ferry bench`: every transport, both built-in workers (no cmd
    /// worker; 5 s per request when there is one), default payloads, 2,000 round trips
    /// per case, at most 2 s each, unpinned, 16 in flight when pipelined.
    pub fn new(ferry_exe: impl Into<PathBuf>) -> Self {
        SuiteOptions {
            ferry_exe: ferry_exe.into(),
            targets: Target::all(),
            workers: WorkerLang::ALL.to_vec(),
            cmd: None,
            cmd_timeout: Duration::from_secs(5),
            payloads: None,
            iterations: 2000,
            max_case_time: Duration::from_secs(2),
            pin: Pin::None,
            pipelined_depth: 16,
            frame_header: ferry::protocol::FrameHeader::default(),
            stdio_framing: ferry::protocol::StdioFraming::default(),
            shm_wait: ferry::transport::shm::WaitStrategy::default(),
            answer: crate::Answer::default(),
            python_echo: crate::PythonEcho::default(),
            rounds: 1,
        }
    }
}

/// What the run is doing, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Something the user should know (a skip).
    Notice(&'a str),
    /// A case starts.
    Start {
        /// 1-based index.
        index: usize,
        /// Cases in the plan.
        total: usize,
        /// What it measures.
        label: &'a str,
    },
    /// Timed round trips done so far in the current case.
    Tick {
        /// Done.
        done: u64,
        /// Asked for.
        of: u64,
    },
    /// The current case ended with this one-line summary.
    Done(&'a str),
}

/// What one case produced.
enum Outcome {
    Sequential(Stats),
    Pipelined(super::pipelined::PipelinedStats),
}

/// Starts the peer of `case`, a case timed one round trip at a time (not pipelined).
fn spawn_case(
    case: &Case,
    options: &SuiteOptions,
    plan: &Plan,
    placement: &Placement,
) -> Result<Box<dyn RoundTrip>, BenchError> {
    Ok(match &case.step {
        Step::Floor(kind) => {
            placement.spawn_peer(|| kind.spawn(&options.ferry_exe, case.payload))??
        }
        Step::Peer(kind) => {
            placement.spawn_peer(|| kind.spawn(&options.ferry_exe, case.payload))??
        }
        Step::Engine(t, w) => {
            Box::new(placement.spawn_peer(|| engine_peer(case, options, plan, *t, *w))??)
        }
        Step::Http => {
            let python = plan
                .http_python
                .as_deref()
                .ok_or_else(|| BenchError::Harness("no Python for the HTTP worker".into()))?;
            Box::new(placement.spawn_peer(|| HttpPeer::spawn(python, case.payload))??)
        }
        Step::Serve => {
            Box::new(placement.spawn_peer(|| ServePeer::spawn(&options.ferry_exe, case.payload))??)
        }
        Step::Pipelined(..) => {
            return Err(BenchError::Harness(
                "a pipelined case has no one-at-a-time peer".into(),
            ))
        }
    })
}

/// The echo worker `w` over transport `t` for `case`.
fn engine_peer(
    case: &Case,
    options: &SuiteOptions,
    plan: &Plan,
    t: TransportKind,
    w: WorkerLang,
) -> Result<EnginePeer, BenchError> {
    let mut spec = match (w, &plan.python) {
        (WorkerLang::Python, Some(python)) => {
            let spec = ferry::worker::WorkerSpec::new(
                "echo",
                python.display().to_string(),
                ["-m", "ferry_worker.echo"],
            );
            match options.python_echo {
                crate::PythonEcho::Plain => spec,
                crate::PythonEcho::Raw => spec.env("FERRY_ECHO_RAW", "1"),
            }
        }
        (WorkerLang::Cmd, _) => options
            .cmd
            .clone()
            .ok_or_else(|| BenchError::Harness("no command line for the cmd worker".into()))?,
        _ => echo_spec(w, &options.ferry_exe).map_err(BenchError::Harness)?,
    };
    spec.frame_header = options.frame_header;
    spec.stdio_framing = options.stdio_framing;
    spec.transport_options.shm.wait = options.shm_wait;
    // The rings the shm floor gets for this payload, so that a frame the floor sends
    // whole is one record in the engine's ring too (not chunked and reassembled).
    spec.transport_options.shm.capacity = spec
        .transport_options
        .shm
        .capacity
        .max(crate::floors::shm_ring_capacity(case.payload));
    let peer = EnginePeer::spawn(spec, t)?.answer(options.answer);
    Ok(match w {
        WorkerLang::Cmd => peer.with_timeout(options.cmd_timeout),
        _ => peer,
    })
}

fn run_case(
    case: &Case,
    options: &SuiteOptions,
    plan: &Plan,
    placement: &Placement,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<Outcome, BenchError> {
    let limits = Limits::new(options.iterations, options.max_case_time);
    let message = payload(case.payload);
    if let Step::Pipelined(t, w) = &case.step {
        let peer = placement.spawn_peer(|| engine_peer(case, options, plan, *t, *w))??;
        let stats = pipelined(&peer, &message, options.pipelined_depth, &limits);
        peer.shutdown()?;
        return Ok(Outcome::Pipelined(stats?));
    }
    let mut peer = spawn_case(case, options, plan, placement)?;
    let stats = measure(&mut *peer, &message, &limits, tick)?;
    drop(peer);
    Ok(Outcome::Sequential(stats))
}

/// Times `cases` (one group: one payload and pinning) in turns
/// ([`interleave`](super::interleave)).
fn run_group(
    cases: &[Case],
    options: &SuiteOptions,
    plan: &Plan,
    placement: &Placement,
    tick: &mut dyn FnMut(u64, u64),
) -> Vec<Result<Outcome, BenchError>> {
    let Some(first) = cases.first() else {
        return Vec::new();
    };
    let message = payload(first.payload);
    let turns = Turns {
        rounds: options.rounds,
        limits: Limits::new(options.iterations, options.max_case_time),
        payload: &message,
    };
    interleave::run_group(
        cases,
        &turns,
        &mut |case| spawn_case(case, options, plan, placement),
        tick,
    )
    .into_iter()
    .map(|r| r.map(Outcome::Sequential))
    .collect()
}

/// The transport of a cmd worker's case, by which a worker that failed there is not
/// tried there again.
fn cmd_transport(case: &Case) -> Option<String> {
    match &case.step {
        Step::Engine(t, WorkerLang::Cmd) | Step::Pipelined(t, WorkerLang::Cmd) => {
            Some(t.to_string())
        }
        _ => None,
    }
}

/// Runs every case of `options`, reporting progress to `on_progress`. A case that fails
/// is recorded in the report's `failures` and the run goes on.
pub fn run(
    options: &SuiteOptions,
    on_progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report, BenchError> {
    let mut machine = Machine::describe();
    let started_at = ferry::protocol::now_timestamp();
    let plan = plan(options);
    for s in &plan.skipped {
        let who = s
            .worker
            .as_deref()
            .map(|w| format!(" ({w} worker)"))
            .unwrap_or_default();
        on_progress(Progress::Notice(&format!(
            "skipping {}{who}: {}",
            s.transport, s.reason
        )));
    }
    let mut placements: HashMap<Pin, Placement> = HashMap::new();
    let mut floors: HashMap<(FloorKind, usize, Pin), f64> = HashMap::new();
    let mut peers: HashMap<(PeerKind, usize, Pin), f64> = HashMap::new();
    let mut sequential: HashMap<(String, String, usize, Pin), f64> = HashMap::new();
    let mut cmd_given_up: HashMap<String, (&'static str, String)> = HashMap::new();
    let mut report = Report {
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        machine: machine.clone(),
        method: method(options),
        results: Vec::new(),
        floors: Vec::new(),
        peers: Vec::new(),
        pipelined: Vec::new(),
        skipped: plan.skipped.clone(),
        failures: Vec::new(),
    };
    let total = plan.cases.len();
    // Outcomes of cases already timed in turns with an earlier case of their group.
    let mut in_turns: HashMap<usize, Result<Outcome, BenchError>> = HashMap::new();
    // The end of the last group timed in turns: the cases before it belong to one.
    let mut turns_until = 0;
    for (i, case) in plan.cases.iter().enumerate() {
        let label = case.label();
        on_progress(Progress::Start {
            index: i + 1,
            total,
            label: &label,
        });
        let placement = match placements.get(&case.pin) {
            Some(p) => p.clone(),
            None => {
                let p = Placement::new(case.pin)?;
                placements.insert(case.pin, p.clone());
                p
            }
        };
        let group = interleave::group_at(&plan.cases, i);
        if options.rounds > 1 && group.len() > 1 && i >= turns_until {
            turns_until = group.end;
            on_progress(Progress::Notice(&format!(
                "timing cases {}-{} in turns, {} rounds",
                group.start + 1,
                group.end,
                options.rounds
            )));
            // A cmd worker given up on its transport takes no turns (its case says so below).
            let members: Vec<usize> = group
                .filter(|&k| {
                    cmd_transport(&plan.cases[k]).is_none_or(|t| !cmd_given_up.contains_key(&t))
                })
                .collect();
            let cases: Vec<Case> = members.iter().map(|&k| plan.cases[k].clone()).collect();
            let outcomes = run_group(&cases, options, &plan, &placement, &mut |done, of| {
                on_progress(Progress::Tick { done, of })
            });
            in_turns.extend(members.into_iter().zip(outcomes));
        }
        // A cmd worker that did not start or answer on a transport is not tried there
        // again: each case would only wait out the same deadline.
        let cmd_on = cmd_transport(case);
        let given_up = cmd_on.as_ref().and_then(|t| cmd_given_up.get(t).cloned());
        let outcome = match given_up {
            Some((code, why)) => Err((code, format!("not run, the worker failed before: {why}"))),
            None => match in_turns.remove(&i) {
                Some(outcome) => outcome,
                None => run_case(case, options, &plan, &placement, &mut |done, of| {
                    on_progress(Progress::Tick { done, of })
                }),
            }
            .map_err(|e| {
                if let (Some(t), BenchError::NoAnswer { .. } | BenchError::Spawn(_)) = (&cmd_on, &e)
                {
                    cmd_given_up.insert(t.clone(), (e.code(), e.to_string()));
                }
                (e.code(), e.to_string())
            }),
        };
        placement.leave()?;
        let (transport, worker) = match &case.step {
            Step::Floor(kind) => (kind.as_str().to_string(), None),
            Step::Peer(kind) => (kind.as_str().to_string(), None),
            Step::Engine(t, w) | Step::Pipelined(t, w) => (t.to_string(), Some(*w)),
            Step::Http => ("http".to_string(), None),
            Step::Serve => ("serve".to_string(), Some(WorkerLang::Rust)),
        };
        let summary = match outcome {
            Err((code, e)) => {
                let reason = format!("{label}: {e}");
                report.failures.push(Skipped {
                    transport,
                    worker: worker.map(|w| w.to_string()),
                    reason: reason.clone(),
                    code: Some(code),
                });
                format!("FAILED [{code}] {reason}")
            }
            Ok(Outcome::Sequential(stats)) => {
                let line = format!(
                    "{label}: p50 {} µs, p99 {} µs",
                    super::table::fmt_us(stats.p50_us),
                    super::table::fmt_us(stats.p99_us)
                );
                match &case.step {
                    Step::Floor(kind) => {
                        floors.insert((*kind, case.payload, case.pin), stats.p50_us);
                        report.floors.push(FloorResult {
                            floor: kind.as_str().to_string(),
                            payload_bytes: case.payload,
                            pin: case.pin,
                            stats,
                        });
                    }
                    Step::Peer(kind) => {
                        peers.insert((*kind, case.payload, case.pin), stats.p50_us);
                        report.peers.push(PeerResult {
                            peer: kind.as_str().to_string(),
                            payload_bytes: case.payload,
                            pin: case.pin,
                            stats,
                        });
                    }
                    step => {
                        let (worker_name, codec) = match step {
                            Step::Engine(t, w) => (
                                w.as_str(),
                                codec_for_framing(*t, options.stdio_framing)
                                    .as_str()
                                    .to_string(),
                            ),
                            Step::Serve => (
                                "rust",
                                format!("http/1.1 json, {} msgpack", worker_transport()),
                            ),
                            _ => ("python", "http/1.1".to_string()),
                        };
                        let floor = FloorKind::for_transport(&transport).map(|k| {
                            (
                                k.as_str(),
                                floors.get(&(k, case.payload, case.pin)).copied(),
                            )
                        });
                        sequential.insert(
                            (
                                transport.clone(),
                                worker_name.to_string(),
                                case.payload,
                                case.pin,
                            ),
                            stats.throughput_per_s,
                        );
                        // The first peer of the transport (there is one today).
                        let peer = PeerKind::for_transport(&transport).first().map(|k| {
                            (
                                k.as_str(),
                                peers.get(&(*k, case.payload, case.pin)).copied(),
                            )
                        });
                        let row = CaseResult::new(
                            &transport,
                            worker_name,
                            &codec,
                            case.payload,
                            case.pin,
                            &stats,
                            floor,
                        )
                        .with_peer(peer);
                        // On one CPU the shm ring and the iceoryx2 ping-pong wait out
                        // timeslices: a ratio to them would say nothing about the engine.
                        let spinning = case.pin == Pin::Same
                            && FloorKind::for_transport(&transport)
                                .is_some_and(FloorKind::busy_polls);
                        report.results.push(if spinning {
                            row.without_busy_polling_comparisons()
                        } else {
                            row
                        });
                    }
                }
                line
            }
            Ok(Outcome::Pipelined(stats)) => {
                let worker_name = worker.map_or("", WorkerLang::as_str).to_string();
                let one_at_a_time = sequential
                    .get(&(
                        transport.clone(),
                        worker_name.clone(),
                        case.payload,
                        case.pin,
                    ))
                    .copied();
                let line = format!(
                    "{label}: {:.0} calls/s with {} in flight",
                    stats.throughput_per_s, stats.depth
                );
                report.pipelined.push(PipelinedResult {
                    transport,
                    worker: worker_name,
                    payload_bytes: case.payload,
                    pin: case.pin,
                    speedup_over_sequential: one_at_a_time
                        .filter(|s| *s > 0.0)
                        .map(|s| stats.throughput_per_s / s),
                    stats,
                });
                line
            }
        };
        on_progress(Progress::Done(&summary));
    }
    report.link_http_baseline();
    machine.finish();
    report.machine = machine;
    Ok(report)
}

fn method(options: &SuiteOptions) -> Method {
    let pin = match options.pin {
        Pin::None => "no pinning: the scheduler places both processes".to_string(),
        Pin::Split => {
            "pinned: host and peer each on its own CPU (sched_setaffinity, the child inherits it)"
                .to_string()
        }
        Pin::Same => "pinned: host and peer on one CPU (sched_setaffinity, the child inherits it)"
            .to_string(),
    };
    let mut notes = vec![
            "processes, not threads: the host is this process, every peer a child process".into(),
            "payload written and read: the host sends the whole payload and reads the whole echo back; the peer reads it whole and writes it back".into(),
            "engine: stdio on lines carries the payload as a JSON string in `data`; socket, tcp, shm (and stdio switched to length-prefixed frames) as one raw attachment, MessagePack envelope; the echo length is checked on every call, the bytes on the first".into(),
            "floors: the same mechanism with no engine (`ferry floor pipe-echo | uds-echo | tcp-echo | shm-echo`), same payload, same pinning, same run; ratio = p50 / floor p50".into(),
            "http: the old design's bridge, an HTTP/1.1 keep-alive POST (TCP_NODELAY) to a Python http.server echo worker on loopback; its floor is the bare TCP ping-pong".into(),
            format!("serve: ferry's own HTTP path, one keep-alive client (TCP_NODELAY) POSTing {{\"worker_type\": \"echo\", \"operation\": \"echo\", \"data\": PAYLOAD}} to /api/inference/generate of a `ferry serve` whose pool runs the Rust echo worker over {} (MessagePack); the whole JSON answer is read, its data compared on the first call; floor: the bare TCP ping-pong; ratio_to_http_baseline = p50 / the http row's p50 at the same payload and pinning", worker_transport()),
            format!("waits: blocking reads on both sides (no spinning) for stdio, socket, tcp and http; shm waits {} (adaptive: spin while the peer runs on another CPU, yield while yielding hands the CPU to it, then a futex; block: the futex at once) and its floor busy-polls; engine answers taken {}", options.shm_wait, match options.answer { crate::Answer::Owned => "owned (copied into a new Response)", crate::Answer::InPlace => "in place (checked where received, copied into one kept buffer)" }),
            pin,
            format!("each case: a warm-up, then up to {} timed round trips one at a time (at most {:.1} s), latencies in an HDR histogram", options.iterations, options.max_case_time.as_secs_f64()),
            if options.rounds > 1 {
                format!("in turns: at each payload and pinning the floor, the peers and the workers are timed in {} rounds, each case taking a turn of 1/{} of its round trips (after its own warm-up) per round with a peer started for the turn and stopped after it, the order rotated each round; ratios compare figures gathered over the same minutes", options.rounds, options.rounds)
            } else {
                "one after the other: each case timed whole, its floor and peers just before it (`--rounds R` times them in turns)".to_string()
            },
            format!("pipelined: {} caller threads on one connection, payloads up to {} B", options.pipelined_depth, PIPELINED_MAX_PAYLOAD),
            format!("frame header offered on socket, tcp and shm: {} (used when the worker accepts it in ready; the Rust echo worker does)", options.frame_header),
            match options.stdio_framing {
                ferry::protocol::StdioFraming::LengthPrefixed => format!("stdio framing offered: length_prefixed (after the JSON ready line, u32 LE length-prefixed MessagePack frames with the payload as one raw attachment, as on socket; the frame header offered applies after the switch: {}); the pipe-echo floor is unchanged", options.frame_header),
                _ => "stdio framing: lines (NDJSON, `--stdio-framing length_prefixed` measures binary frames on stdio)".to_string(),
            },
        ];
    if options.workers.contains(&WorkerLang::Python) {
        notes.push(format!(
            "python echo: the {} handler ({})",
            options.python_echo,
            options.python_echo.describe()
        ));
    }
    let shm_targeted = options.targets.iter().any(|t| t.name() == "shm");
    if shm_targeted {
        notes.push("shm rings: the engine's links get at least the floor's ring capacity for the payload (2 x payload + 64 bytes, rounded up to a power of two; 4 MiB by default), so frames the floor sends whole are whole records on both".into());
        for (kind, how) in PeerKind::missing_for_transport("shm") {
            notes.push(format!("{} peer: not built ({how})", kind.as_str()));
        }
    }
    if shm_targeted && !PeerKind::for_transport("shm").is_empty() {
        notes.push("peers: iceoryx2 publish-subscribe ping-pong between two processes (services ping and pong of byte slices, one sample buffered, no history), both sides busy-polling `receive` as iceoryx2's own benchmark does; the host copies the payload into a loaned sample and the echo out of the received one, the peer copies the received payload into its own loaned sample; same payload, pinning and run as the shm floor; ratio_to_peer = p50 / peer p50".into());
    }
    if let Some(cmd) = options
        .cmd
        .as_ref()
        .filter(|_| options.workers.contains(&WorkerLang::Cmd))
    {
        notes.push(format!(
            "cmd worker: `{}` (worker \"cmd\"), sent `echo` like the built-in workers and checked the same way; every request has a deadline of {} ms",
            std::iter::once(cmd.command.as_str()).chain(cmd.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" "),
            options.cmd_timeout.as_millis()
        ));
    }
    Method {
        notes,
        iterations_requested: options.iterations,
        max_case_seconds: options.max_case_time.as_secs_f64(),
        pipelined_depth: if options.pipelined_depth > 1 {
            options.pipelined_depth
        } else {
            0
        },
    }
}
