//! What the pool adds to a call, measured as the caller thread's CPU time, which (unlike
//! wall time on a shared 2-vCPU machine) does not depend on how fast the scheduler wakes
//! the peer.
//!
//! Alternates rounds of N direct `WorkerProcess::call`s, N `Pool::call`s and N
//! `Pool::call_async`s (on a current-thread tokio runtime) to the Rust echo worker over
//! stdio (64 B payload) and prints wall and caller-CPU microseconds per call for each. Run from the workspace root, after `cargo build --release -p ferry-server`:
//! `cargo run --release -p ferry-bench --example pool_overhead -- target/release/ferry`
//! (`FERRY_BENCH_TRANSPORT=socket` for another transport).

use ferry::pool::{Pool, PoolConfig};
use ferry::protocol::Envelope;
use ferry::worker::{WorkerProcess, WorkerSpec};
use std::time::Instant;

const CALLS: u32 = 20_000;

/// CPU seconds this thread has used.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Runs `f` CALLS times; returns (wall µs, caller CPU µs) per call.
fn per_call(mut f: impl FnMut()) -> (f64, f64) {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for _ in 0..CALLS {
        f();
    }
    let n = f64::from(CALLS);
    (
        wall.elapsed().as_secs_f64() / n * 1e6,
        (thread_cpu() - cpu) / n * 1e6,
    )
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
    let data = serde_json::json!({ "p": "x".repeat(56) });
    for round in 0..3 {
        let mut worker = WorkerProcess::spawn(spec())?;
        let (dw, dc) = per_call(|| {
            worker
                .call("echo", data.clone(), |_| {})
                .expect("direct call");
        });
        worker.shutdown()?;
        let pool = Pool::start(spec(), PoolConfig::default())?;
        let (pw, pc) = per_call(|| {
            pool.call(Envelope::request("", "echo", data.clone()), &[], |_| {})
                .expect("pool call");
        });
        // The same pool from async code: a current-thread runtime on this thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (aw, ac) = per_call(|| {
            rt.block_on(pool.call_async(
                Envelope::request("", "echo", data.clone()),
                Vec::new(),
                Default::default(),
                |_| {},
            ))
            .expect("async pool call");
        });
        pool.shutdown();
        println!(
            "round {round}: direct {dw:.2} us wall {dc:.2} us cpu | pool {pw:.2} us wall {pc:.2} us cpu | async pool {aw:.2} us wall {ac:.2} us cpu | pool adds {:.2} us cpu sync, {:.2} us cpu async; wall ratio to direct: sync {:.2}x, async {:.2}x",
            pc - dc,
            ac - dc,
            pw / dw,
            aw / dw
        );
    }
    Ok(())
}
