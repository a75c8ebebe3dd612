//! What the pool adds to a call, measured as the caller thread's CPU time, which (unlike
//! wall time on a shared 2-vCPU machine) does not depend on how fast the scheduler wakes
//! the peer.
//!
//! Each round interleaves blocks of direct `WorkerProcess::call`s, `Pool::call`s and
//! `Pool::call_async`s (on a current-thread tokio runtime) to the Rust echo worker (64 B
//! payload), rotating which kind goes first, so a drift in the machine's speed during a
//! round (another process, the CPU's clock) falls on the three kinds alike; it prints wall
//! and caller-CPU microseconds per call for each. Run from the workspace root, after
//! `cargo build --release -p ferry-server`:
//! `cargo run --release -p ferry-bench --example pool_overhead -- target/release/ferry`
//! (`FERRY_BENCH_TRANSPORT=shm` for another transport, stdio by default;
//! `FERRY_BENCH_PAYLOAD=N` for an N-character string in place of the 64 B payload,
//! `FERRY_BENCH_ASYNC_LEAD_US=N` for the pool's `async_lead`; `FERRY_BENCH_PIN=same|split`
//! to put the workers on the caller's CPU or on the next one, as `ferry bench --pin`
//! does: unpinned, the scheduler may place the direct worker and the pool's worker
//! differently, and where a wake-up across CPUs is slow that placement, not the pool,
//! decides the difference).

use ferry::pool::{Pool, PoolConfig};
use ferry::protocol::Envelope;
use ferry::worker::{WorkerProcess, WorkerSpec};
use ferry_bench::{Pin, Placement};
use std::time::Instant;

/// Calls of each kind per round.
const CALLS: u32 = 20_000;
/// Calls of one kind in a row before the next kind's block.
const BLOCK: u32 = 500;

/// CPU seconds this thread has used.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Wall and caller-CPU seconds one kind of call has used so far.
#[derive(Default, Clone, Copy)]
struct Spent {
    wall: f64,
    cpu: f64,
}

impl Spent {
    /// Runs `f(n)` (which makes `n` calls) and adds what it took.
    fn run(&mut self, n: u32, f: &mut dyn FnMut(u32)) {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        f(n);
        self.wall += wall.elapsed().as_secs_f64();
        self.cpu += thread_cpu() - cpu;
    }

    /// (wall µs, CPU µs) per call.
    fn per_call(self) -> (f64, f64) {
        let n = f64::from(CALLS);
        (self.wall / n * 1e6, self.cpu / n * 1e6)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ferry".into());
    // FERRY_BENCH_TRANSPORT=socket|tcp|... picks the transport (default stdio).
    let transport: ferry::transport::TransportKind = match std::env::var("FERRY_BENCH_TRANSPORT") {
        Ok(name) => name.parse()?,
        Err(_) => Default::default(),
    };
    let spec = || {
        let mut s = WorkerSpec::new("echo", &exe, ["worker", "echo"]);
        s.transport = transport;
        s
    };
    // FERRY_BENCH_PAYLOAD=N: the echoed string's length (56 by default: a 64 B payload).
    let payload: usize = match std::env::var("FERRY_BENCH_PAYLOAD") {
        Ok(n) => n.parse()?,
        Err(_) => 56,
    };
    let data = serde_json::json!({ "p": "x".repeat(payload) });
    // FERRY_BENCH_ASYNC_LEAD_US=N: the pool's `async_lead` in µs (its default otherwise).
    let lead_us: Option<u64> = match std::env::var("FERRY_BENCH_ASYNC_LEAD_US") {
        Ok(n) => Some(n.parse()?),
        Err(_) => None,
    };
    // FERRY_BENCH_PIN=none|same|split: where the workers run beside this thread.
    let pin = Pin::from_env_or(Pin::None)?;
    let placement = Placement::new(pin)?;
    for round in 0..3 {
        let mut worker = placement.spawn_peer(|| WorkerProcess::spawn(spec()))??;
        let mut config = PoolConfig::default();
        if let Some(us) = lead_us {
            config.async_lead = std::time::Duration::from_micros(us);
        }
        // The pool's own threads start on the worker's CPU too (they inherit the mask).
        let pool = placement.spawn_peer(|| Pool::start(spec(), config))??;
        // The same pool from async code: a current-thread runtime on this thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut direct = |n: u32| {
            for _ in 0..n {
                worker
                    .call("echo", data.clone(), |_| {})
                    .expect("direct call");
            }
        };
        let mut sync = |n: u32| {
            for _ in 0..n {
                pool.call(Envelope::request("", "echo", data.clone()), &[], |_| {})
                    .expect("pool call");
            }
        };
        // A block of async calls runs in one `block_on`, as a server's task makes its
        // calls: entering the runtime once per call would add the runtime's own set-up
        // (a few µs) to every call.
        let mut asynchronous = |n: u32| {
            rt.block_on(async {
                for _ in 0..n {
                    pool.call_async(
                        Envelope::request("", "echo", data.clone()),
                        Vec::new(),
                        Default::default(),
                        |_| {},
                    )
                    .await
                    .expect("async pool call");
                }
            });
        };
        let mut spent = [Spent::default(); 3];
        let kinds: [&mut dyn FnMut(u32); 3] = [&mut direct, &mut sync, &mut asynchronous];
        for block in 0..CALLS / BLOCK {
            for k in 0..3 {
                let kind = (k + block as usize) % 3;
                spent[kind].run(BLOCK, &mut *kinds[kind]);
            }
        }
        pool.shutdown();
        worker.shutdown()?;
        let [(dw, dc), (pw, pc), (aw, ac)] = spent.map(Spent::per_call);
        println!(
            "pin {pin} round {round}: direct {dw:.2} us wall {dc:.2} us cpu | pool {pw:.2} us wall {pc:.2} us cpu | async pool {aw:.2} us wall {ac:.2} us cpu | pool adds {:.2} us cpu sync, {:.2} us cpu async; wall ratio to direct: sync {:.2}x, async {:.2}x",
            pc - dc,
            ac - dc,
            pw / dw,
            aw / dw
        );
    }
    Ok(())
}
