//! Full stack (pool call -> worker -> answer) against a direct call on the same transport,
//! in the same run, and crash-to-replacement-ready time.
//!
//! Method: the Rust echo worker (`ferry worker echo`) in a child process; 64 B of payload;
//! JSON codec. `direct` is `WorkerProcess::call` (transport + codec + connection, no
//! pool); `pool_sync` adds dispatch on the caller's thread; `pool_async` is
//! `Pool::call_async` from a current-thread tokio runtime (the reply comes through the
//! connection's reader thread: one wake-up). The pool's cost is the difference of the
//! medians. `crash_to_ready` kills the worker with SIGKILL and times until the pool
//! publishes the replacement's `ready` (restart backoff set to 0).
//! Run: `cargo bench --bench pool`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferry::pool::{LifecycleEvent, LifecycleKind, Pool, PoolConfig};
use ferry::protocol::Envelope;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry-peer");

fn spec(transport: TransportKind) -> WorkerSpec {
    let mut spec = WorkerSpec::new("echo", FERRY, ["worker", "echo"]);
    spec.transport = transport;
    spec
}

fn payload() -> serde_json::Value {
    json!({ "p": "x".repeat(56) })
}

fn full_stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_round_trip_64B");
    for transport in TransportKind::ALL {
        let name = transport.as_str();
        let mut worker = WorkerProcess::spawn(spec(transport)).expect("worker");
        group.bench_function(BenchmarkId::new("direct", name), |b| {
            b.iter(|| black_box(worker.call("echo", payload(), |_| {}).expect("call")))
        });
        worker.shutdown().expect("shutdown");

        let pool = Pool::start(spec(transport), PoolConfig::default()).expect("pool");
        group.bench_function(BenchmarkId::new("pool_sync", name), |b| {
            b.iter(|| {
                black_box(
                    pool.call(Envelope::request("", "echo", payload()), &[], |_| {})
                        .expect("call"),
                )
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        group.bench_function(BenchmarkId::new("pool_async", name), |b| {
            b.iter(|| {
                let call = pool.call_async(
                    Envelope::request("", "echo", payload()),
                    Vec::new(),
                    CallOptions::default(),
                    |_| {},
                );
                black_box(rt.block_on(call).expect("call"))
            })
        });
        pool.shutdown();
    }
    group.finish();
}

/// Kills the pool's worker and times until its replacement is ready, `iters` times.
fn kill_until_ready(
    pool: &Pool,
    events: &mut tokio::sync::broadcast::Receiver<LifecycleEvent>,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let pid = pool.status()[0].pid.expect("running worker");
        let started = Instant::now();
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
        while events.blocking_recv().expect("event").kind != LifecycleKind::Ready {}
        total += started.elapsed();
    }
    total
}

/// Crash-to-replacement-ready for one worker spec.
fn crash_bench(c: &mut Criterion, name: &str, spec: WorkerSpec) {
    let mut group = c.benchmark_group("crash_to_replacement_ready");
    group.sample_size(10);
    // Every kill counts as a failure: keep the breaker out of the measurement.
    let mut config = PoolConfig::default();
    config.restart_backoff = Duration::ZERO;
    config.breaker_failure_threshold = u32::MAX;
    let pool = Pool::start(spec, config).expect("pool");
    let mut events = pool.events();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| kill_until_ready(&pool, &mut events, iters))
    });
    group.finish();
    pool.shutdown();
}

fn crash_to_ready(c: &mut Criterion) {
    crash_bench(c, "rust_echo_stdio", spec(TransportKind::Stdio));
    // The Python echo worker, when `.venv` (made by `scripts/test`) or `FERRY_PYTHON` has one.
    let python = std::env::var("FERRY_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .join(".venv/bin/python")
        });
    if python.exists() {
        let spec = WorkerSpec::new(
            "py-echo",
            python.display().to_string(),
            ["-m", "ferry_worker.echo"],
        );
        crash_bench(c, "python_echo_stdio", spec);
    } else {
        eprintln!(
            "skipping crash_to_replacement_ready/python_echo_stdio: no {}",
            python.display()
        );
    }
}

criterion_group!(benches, full_stack, crash_to_ready);
criterion_main!(benches);
