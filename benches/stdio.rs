//! stdio round trip to the Rust echo worker, beside a bare pipe ping-pong in the same run.
//!
//! Method: two processes (host = this bench, peer = a child), blocking reads on both
//! sides, no pinning (the scheduler decides), payload written and read every time. The
//! bare pipe peer (`ferry floor pipe-echo`) echoes fixed-size messages with no framing or
//! parsing; the engine path encodes a request envelope, the worker decodes it, runs the
//! echo handler, encodes a response, the host decodes it. The ratio of the two medians is
//! the engine's cost. Run: `cargo bench --bench stdio`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::floor::PipeFloor;
use ferry::protocol::Envelope;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::hint::black_box;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn stdio_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("stdio_round_trip");
    for size in [64usize, 4096] {
        group.throughput(Throughput::Bytes(size as u64));
        let size_arg = size.to_string();
        let mut floor =
            PipeFloor::spawn(FERRY, &["floor", "pipe-echo", &size_arg], size).expect("floor peer");
        let message = vec![b'x'; size];
        group.bench_with_input(BenchmarkId::new("bare_pipe", size), &size, |b, _| {
            b.iter(|| floor.round_trip(black_box(&message)).expect("round trip"))
        });
        drop(floor);

        let mut worker = WorkerProcess::spawn(WorkerSpec::new("echo", FERRY, ["worker", "echo"]))
            .expect("echo worker");
        // `size` bytes of payload in `data`.
        let data = json!({ "p": "x".repeat(size.saturating_sub(8)) });
        let options = CallOptions::default();
        group.bench_with_input(
            BenchmarkId::new("ferry_rust_echo_json", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let request = Envelope::request("", "echo", data.clone());
                    let reply = worker
                        .call_with(request, &[], &options, |_| {})
                        .expect("call");
                    black_box(reply);
                })
            },
        );
        worker.shutdown().expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, stdio_round_trip);
criterion_main!(benches);
