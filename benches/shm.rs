//! shm round trip to the Rust echo worker, beside the bare spinning ring, in the same run.
//!
//! Method: two processes (host = this bench, peer = a child), no pinning unless stated,
//! payload written and read every round trip. The bare ring peer (`ferry floor shm-echo`)
//! busy-polls a ring in the same kind of segment and echoes fixed-size messages with no
//! frames, waiting strategy or codec. The engine path sends a request envelope (MessagePack)
//! whose payload is a raw attachment; the worker decodes it, runs the echo handler,
//! encodes the response with the attachment; the host decodes it. Both use the transport's
//! default (adaptive) waiting unless stated.
//!
//! A third case, `ferry_shm_frames_only`, is the shm transport without the engine: the
//! child (`ferry floor shm-frame-echo`) echoes raw frames, no codec, no worker runtime; it
//! separates the transport's cost from the engine's.
//!
//! Besides criterion's groups, each case is also timed round trip by round trip and the
//! p50/p99 printed as `SHM-BENCH` lines, with the ratio to the bare ring of the same run.
//! The last lines pin both processes to CPU 0 (`taskset -c 0` style): the engine must not
//! fall into timeslice-long waits there. Run: `cargo bench --bench shm`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::codec::CodecKind;
use ferry::floor::ShmFloor;
use ferry::protocol::Envelope;
use ferry::transport::shm::WaitStrategy;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::Value;
use std::hint::black_box;
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn shm_worker(wait: WaitStrategy) -> WorkerProcess {
    let mut spec = WorkerSpec::new("echo", FERRY, ["worker", "echo"]);
    spec.transport = TransportKind::Shm;
    spec.codec = CodecKind::MsgPack;
    spec.transport_options.shm.wait = wait;
    WorkerProcess::spawn(spec).expect("echo worker over shm")
}

fn floor() -> ShmFloor {
    ShmFloor::spawn(FERRY, &["floor", "shm-echo"], 4 << 20).expect("bare ring peer")
}

/// The shm transport alone: a child echoing raw frames (`ferry floor shm-frame-echo`).
struct FrameEcho {
    child: std::process::Child,
    link: ferry::transport::Link,
    buf: Vec<u8>,
}

impl FrameEcho {
    fn spawn() -> FrameEcho {
        let options = ferry::transport::TransportOptions::default();
        let max = ferry::codec::DEFAULT_MAX_FRAME;
        let mut pending =
            ferry::transport::prepare(TransportKind::Shm, &options, max).expect("segment");
        let mut cmd = std::process::Command::new(FERRY);
        cmd.args(["floor", "shm-frame-echo"]).env(
            ferry::worker::env::FERRY_HOST_PID,
            std::process::id().to_string(),
        );
        pending.configure(&mut cmd).expect("configure");
        let mut child = cmd.spawn().expect("spawn frame echo");
        let link = pending
            .connect(&mut child, Instant::now() + Duration::from_secs(10))
            .expect("connect");
        FrameEcho {
            child,
            link,
            buf: Vec::new(),
        }
    }

    fn round_trip(&mut self, message: &[u8]) {
        self.link.sender.send(&[message]).expect("send");
        self.link.receiver.recv(&mut self.buf, None).expect("recv");
        assert_eq!(self.buf.len(), message.len());
    }
}

impl Drop for FrameEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(worker: &mut WorkerProcess, payload: &[u8]) {
    let request = Envelope::request("", "echo", Value::Null);
    let reply = worker
        .call_with(request, &[payload], &CallOptions::default(), |_| {})
        .expect("call");
    assert_eq!(reply.attachments[0].len(), payload.len());
    black_box(reply);
}

/// Round trips timed one by one: (p50, p99) in microseconds.
fn percentiles(iters: usize, mut one: impl FnMut()) -> (f64, f64) {
    for _ in 0..iters / 10 {
        one();
    }
    let mut samples: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            one();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(samples[iters / 2]), us(samples[iters * 99 / 100]))
}

fn iters_for(size: usize, measuring: bool) -> usize {
    if !measuring {
        20
    } else if size >= 1 << 20 {
        1_000
    } else {
        20_000
    }
}

fn shm_round_trip(c: &mut Criterion) {
    // `cargo test` runs benches once as a smoke test (no `--bench`): skip the long loops.
    let measuring = std::env::args().any(|a| a == "--bench");
    let mut group = c.benchmark_group("shm_round_trip");
    let mut summary = Vec::new();
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1 << 20 {
            group.sample_size(20);
        } else {
            group.sample_size(50);
        }
        let message = vec![b'x'; size];

        let mut bare = floor();
        group.bench_with_input(BenchmarkId::new("bare_ring", size), &size, |b, _| {
            b.iter(|| bare.round_trip(black_box(&message)).expect("round trip"))
        });
        let bare_p = percentiles(iters_for(size, measuring), || {
            bare.round_trip(&message).expect("round trip")
        });
        drop(bare);

        let mut frames = FrameEcho::spawn();
        group.bench_with_input(
            BenchmarkId::new("ferry_shm_frames_only", size),
            &size,
            |b, _| b.iter(|| frames.round_trip(black_box(&message))),
        );
        let frames_p = percentiles(iters_for(size, measuring), || frames.round_trip(&message));
        drop(frames);

        let mut worker = shm_worker(WaitStrategy::Adaptive);
        group.bench_with_input(
            BenchmarkId::new("ferry_rust_echo_msgpack", size),
            &size,
            |b, _| b.iter(|| call(&mut worker, black_box(&message))),
        );
        let ferry_p = percentiles(iters_for(size, measuring), || call(&mut worker, &message));
        worker.shutdown().expect("shutdown");
        summary.push((size, bare_p, frames_p, ferry_p));
    }
    group.finish();
    for (size, bare, frames, ferry) in summary {
        println!(
            "SHM-BENCH payload={size} bare_ring p50={:.2}us p99={:.2}us | \
             shm_frames_only p50={:.2}us p99={:.2}us ratio_p50={:.2} | \
             ferry_engine p50={:.2}us p99={:.2}us ratio_p50={:.2}",
            bare.0,
            bare.1,
            frames.0,
            frames.1,
            frames.0 / bare.0,
            ferry.0,
            ferry.1,
            ferry.0 / bare.0
        );
    }
    if measuring {
        same_core();
    }
}

/// Both processes on CPU 0: the worker inherits the bench's affinity at spawn.
fn same_core() {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let Ok(before) = sched_getaffinity(None) else {
            return;
        };
        let mut cpu0 = CpuSet::new();
        cpu0.set(0);
        if sched_setaffinity(None, &cpu0).is_err() {
            return;
        }
        let message = vec![b'x'; 64];
        for wait in [WaitStrategy::Adaptive, WaitStrategy::Block] {
            let mut worker = shm_worker(wait);
            let (p50, p99) = percentiles(5_000, || call(&mut worker, &message));
            worker.shutdown().expect("shutdown");
            println!(
                "SHM-BENCH pinned=same-core(cpu0) wait={wait} payload=64 ferry_shm_p50_us={p50:.2} \
                 ferry_shm_p99_us={p99:.2} (a bare spinning ring takes a timeslice, ~8000 us, here)"
            );
        }
        let _ = sched_setaffinity(None, &before);
    }
}

criterion_group!(benches, shm_round_trip);
criterion_main!(benches);
