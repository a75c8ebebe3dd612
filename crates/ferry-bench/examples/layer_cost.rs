//! Where a small shm round trip's time goes, layer by layer, in one run.
//!
//! Four round trips of the same 64 B message, each to its own child process, measured in
//! interleaved blocks (rotating which goes first) so that the machine's drift, and on a VM
//! the host moving the vCPUs, falls on all four alike:
//!
//! 1. `ring`: the bare spinning ring (`ferry floor shm-echo`), the floor of `ferry bench`;
//! 2. `frames`: the shm transport alone (`ferry floor shm-frame-echo`: records, adaptive
//!    waiting, liveness; no codec, no worker runtime, no connection);
//! 3. `engine in place`: the Rust echo worker through the whole engine (compact frames,
//!    MessagePack data, the connection's pending table, the worker runtime), the answer read
//!    where it lies (`WorkerProcess::call_in_place`);
//! 4. `engine owned`: the same, the answer copied into a new `Response` (`call_with`).
//!
//! The bare ring's peer busy-polls for as long as it lives, so it is started afresh for
//! each of its blocks and stopped after it: alive beside the other blocks it would share the
//! peer CPU with their children and cost them timeslices. Before each block the host pauses
//! 20 ms, long enough for the idle children's adaptive waits to reach their futex sleep, so
//! a child spinning or yielding for a block that has ended does not compete with the next.
//!
//! It prints wall µs per round trip for each (the median of the blocks' means and the
//! fastest block), and the differences between neighbouring layers: what the transport
//! adds to the ring, and what the engine adds to the transport. Run from the workspace root,
//! after `cargo build --release -p ferry-server`:
//! `cargo run --release -p ferry-bench --example layer_cost -- target/release/ferry`
//! (`FERRY_BENCH_PIN=none|same|split`, split by default, `same` leaving the ring out;
//! `FERRY_BENCH_PAYLOAD=N` bytes).

use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use ferry_bench::floor::{ShmFloor, ShmFrames};
use ferry_bench::{payload, shm_ring_capacity, Pin, Placement};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Blocks of each kind per run.
const BLOCKS: usize = 40;
/// Round trips of one kind in a row before the next kind's block.
const BLOCK: u32 = 2_000;
/// Runs, each with fresh children.
const RUNS: usize = 3;
/// The pause before each block, for the idle children to fall asleep.
const SETTLE: Duration = Duration::from_millis(20);

/// The median of `v` (sorted here).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ferry".into());
    let pin = Pin::from_env_or(Pin::Split)?;
    let size: usize = match std::env::var("FERRY_BENCH_PAYLOAD") {
        Ok(n) => n.parse()?,
        Err(_) => 64,
    };
    let message = payload(size);
    let placement = Placement::new(pin)?;
    let names = ["ring", "frames", "engine in place", "engine owned"];
    for run in 0..RUNS {
        let ring = || {
            placement.spawn_peer(|| {
                ShmFloor::spawn(&exe, &["floor", "shm-echo"], shm_ring_capacity(size))
            })
        };
        let mut frames = placement.spawn_peer(|| ShmFrames::spawn(&exe))??;
        let mut worker = placement.spawn_peer(|| {
            let mut spec = WorkerSpec::new("echo", &exe, ["worker", "echo"]);
            spec.transport = TransportKind::Shm;
            spec.codec = CodecKind::MsgPack;
            WorkerProcess::spawn(spec)
        })??;
        let options = CallOptions::default();
        let mut kept = Vec::new();
        // One request, lent to every call (as `ferry bench` does).
        let request = Envelope::request("", "echo", Value::Null);
        // The ring's round trips go through `timed` (its peer lives for one block only).
        let mut one = |kind: usize, worker: &mut WorkerProcess| match kind {
            1 => frames.round_trip(&message).expect("frame echo"),
            2 => {
                worker
                    .call_in_place(
                        &request,
                        &[&message],
                        &options,
                        |_| {},
                        |answer| {
                            kept.clear();
                            kept.extend_from_slice(answer.attachments[0]);
                        },
                    )
                    .expect("call in place");
                assert_eq!(kept.len(), message.len(), "echo length");
            }
            _ => {
                let reply = worker
                    .call_with(&request, &[&message], &options, |_| {})
                    .expect("call");
                assert_eq!(reply.attachments[0].len(), message.len(), "echo length");
            }
        };
        // Mean µs per round trip of one block of `kind`, after a warm-up of a tenth as many
        // (every path through its first allocations and page faults).
        let mut timed =
            |kind: usize, worker: &mut WorkerProcess| -> Result<f64, Box<dyn std::error::Error>> {
                std::thread::sleep(SETTLE);
                if kind == 0 {
                    let mut floor = ring()??;
                    for _ in 0..BLOCK / 10 {
                        floor.round_trip(&message)?;
                    }
                    let start = Instant::now();
                    for _ in 0..BLOCK {
                        floor.round_trip(&message)?;
                    }
                    return Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(BLOCK));
                }
                for _ in 0..BLOCK / 10 {
                    one(kind, worker);
                }
                let start = Instant::now();
                for _ in 0..BLOCK {
                    one(kind, worker);
                }
                Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(BLOCK))
            };
        // On one CPU the bare ring's busy-polling ends wait out a timeslice per hop
        // (milliseconds): it is left out there.
        let first = usize::from(pin == Pin::Same);
        let kinds = names.len() - first;
        let mut means: Vec<Vec<f64>> = vec![Vec::with_capacity(BLOCKS); names.len()];
        for block in 0..BLOCKS {
            for k in 0..kinds {
                let kind = first + (k + block) % kinds;
                means[kind].push(timed(kind, &mut worker)?);
            }
        }
        worker.shutdown()?;
        let fastest: Vec<f64> = means
            .iter()
            .map(|m| m.iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let medians: Vec<f64> = means
            .iter_mut()
            .map(|m| if m.is_empty() { f64::NAN } else { median(m) })
            .collect();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "pin {pin}, {size} B, run {run} (load {}):",
            load.split_whitespace().next().unwrap_or("n/a")
        );
        for (i, name) in names.iter().enumerate().skip(first) {
            println!(
                "  {name:<16} {:6.3} us per round trip (median of {BLOCKS} blocks of {BLOCK}), fastest block {:6.3} us",
                medians[i], fastest[i]
            );
        }
        if first == 0 {
            println!(
                "  transport adds {:+.3} us to the ring",
                medians[1] - medians[0]
            );
        }
        println!(
            "  engine adds {:+.3} us to the transport (in place), owned answer {:+.3} us more",
            medians[2] - medians[1],
            medians[3] - medians[2]
        );
    }
    Ok(())
}
