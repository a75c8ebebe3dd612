//! shm round trips beside the project's bare spinning ring, in the same run:
//!
//! - `shm_round_trip`: at 64 B, 4 KiB, 1 MiB and 16 MiB, the bare ring (`ferry floor
//!   shm-echo`: busy-polled rings in the same kind of segment, fixed-size messages, no
//!   frames, waiting strategy or codec), then the Rust and Python echo workers over the
//!   engine (MessagePack, payload as one raw attachment). The shared harness and its
//!   method: `ferry_bench` and `benches/common`.
//! - `shm_transport_only`: the shm transport without the engine (`ferry floor
//!   shm-frame-echo` echoes raw frames: no codec, no worker runtime), which separates the
//!   transport's cost from the engine's.
//! - `shm_same_core`: 64 B through the engine with both processes pinned to CPU 0
//!   (`taskset -c 0` style; the worker inherits the affinity), adaptive and block waiting:
//!   a bare spinning ring takes a timeslice per hop there (~8,000 µs), the engine must not.
//!
//! Run: `cargo bench --bench shm`.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::shm::WaitStrategy;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::Value;
use std::hint::black_box;

use common::FERRY;
use ferry_bench::floor::ShmFrames;
const TRANSPORT_ONLY_SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn shm_worker(wait: WaitStrategy) -> WorkerProcess {
    let mut spec = WorkerSpec::new("echo", FERRY, ["worker", "echo"]);
    spec.transport = TransportKind::Shm;
    spec.codec = CodecKind::MsgPack;
    spec.transport_options.shm.wait = wait;
    WorkerProcess::spawn(spec).expect("echo worker over shm")
}

fn call(worker: &mut WorkerProcess, payload: &[u8]) {
    let request = Envelope::request("", "echo", Value::Null);
    let reply = worker
        .call_with(request, &[payload], &CallOptions::default(), |_| {})
        .expect("call");
    assert_eq!(reply.attachments[0].len(), payload.len());
    black_box(reply);
}

fn shm_round_trip(c: &mut Criterion) {
    common::transport_suite(c, TransportKind::Shm);
}

fn shm_transport_only(c: &mut Criterion) {
    let mut group = common::group(c, "shm_transport_only");
    for size in TRANSPORT_ONLY_SIZES {
        common::size_group(&mut group, size);
        let message = ferry_bench::payload(size);
        let mut frames = ShmFrames::spawn(FERRY).expect("spawn frame echo");
        frames.round_trip(&message).expect("frame echo");
        group.bench_with_input(BenchmarkId::new("shm_frames", size), &size, |b, _| {
            b.iter(|| frames.round_trip(black_box(&message)).expect("frame echo"))
        });
    }
    group.finish();
}

/// Both processes on CPU 0: the worker inherits the bench's affinity at spawn.
fn shm_same_core(c: &mut Criterion) {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let Ok(before) = sched_getaffinity(None) else {
            return;
        };
        let mut cpu0 = CpuSet::new();
        cpu0.set(0);
        if sched_setaffinity(None, &cpu0).is_err() {
            eprintln!("SKIPPED shm_same_core: cannot pin to CPU 0");
            return;
        }
        let mut group = common::group(c, "shm_same_core");
        group.throughput(Throughput::Bytes(64));
        let message = ferry_bench::payload(64);
        for wait in [WaitStrategy::Adaptive, WaitStrategy::Block] {
            let mut worker = shm_worker(wait);
            call(&mut worker, &message);
            group.bench_function(
                BenchmarkId::new(format!("ferry_rust_echo_{wait}"), 64),
                |b| b.iter(|| call(&mut worker, black_box(&message))),
            );
            worker.shutdown().expect("shutdown");
        }
        group.finish();
        let _ = sched_setaffinity(None, &before);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = c;
}

criterion_group!(benches, shm_round_trip, shm_transport_only, shm_same_core);
criterion_main!(benches);
