//! Host → Python echo worker round trip at 200 B over every transport (and every codec that
//! fits it), beside a minimal pure-Python NDJSON echo loop driven over pipes the same way,
//! in the same run.
//!
//! Method: two processes (host = this bench, peer = a Python child), blocking waits on both
//! sides, no pinning, payload written and read every time.
//! - `minimal_ndjson_loop`: `python -c` running
//!   `for line in sys.stdin: print(json.dumps(json.loads(line)), flush=True)`, sent one
//!   200-byte line in `json.dumps` format (so the echo is byte-identical) and read back
//!   whole. No envelope, no ids, no handshake: the floor of "Python worker over stdio".
//! - `ferry_python_echo/<transport>_<codec>`: `python -m ferry_worker.echo` (the pyo3
//!   bindings over the Rust worker runtime), the same 200-byte JSON object as the request's
//!   `data`, carried in a full protocol envelope (ids, timestamp, version checks; ~130 more
//!   bytes each way), decoded by the runtime, handed to the Python handler as a `dict`, and
//!   its return value encoded back.
//! - `ferry_rust_echo/<transport>_<codec>`: the same request to the Rust echo worker, so the
//!   cost of the Python layer reads directly as the difference.
//!
//! Run: `cargo bench --bench python` (needs the project's virtual environment; see
//! `ferry_bench::python`). Without it the bench prints why and measures nothing.

use ferry_bench::python as python_env;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use ferry_bench::floor::PipeFloor;
use serde_json::Value;
use std::hint::black_box;
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry-peer");
const SIZE: usize = 200;
const MINIMAL_LOOP: &str = "import json, sys\n\
for line in sys.stdin: print(json.dumps(json.loads(line)), flush=True)";

/// A 200-byte line (newline included) that `json.dumps(json.loads(line))` reproduces exactly.
fn line_200() -> String {
    let frame = |prompt: &str| {
        format!(
            r#"{{"type": "inference", "request_id": "abc", "data": {{"prompt": "{prompt}", "seed": 42}}}}"#
        )
    };
    let fill = SIZE - 1 - frame("").len();
    let prompt: String = (0..fill).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let line = format!("{}\n", frame(&prompt));
    assert_eq!(line.len(), SIZE);
    line
}

fn bench_worker(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut spec: WorkerSpec,
    transport: TransportKind,
    codec: CodecKind,
    payload: &Value,
) {
    spec.transport = transport;
    spec.codec = codec;
    let mut worker = WorkerProcess::spawn(spec).expect("echo worker starts");
    let options = CallOptions::default();
    let check = worker
        .call_with(
            Envelope::request("", "echo", payload.clone()),
            &[],
            &options,
            |_| {},
        )
        .expect("echo answers");
    assert_eq!(&check.data, payload, "echo is faithful");
    group.bench_function(
        BenchmarkId::new(name, format!("{transport}_{codec}")),
        |b| {
            b.iter(|| {
                let request = Envelope::request("", "echo", payload.clone());
                let reply = worker
                    .call_with(request, &[], &options, |_| {})
                    .expect("call");
                black_box(reply);
            })
        },
    );
    worker.shutdown().expect("shutdown");
}

fn python_round_trip(c: &mut Criterion) {
    let Some(python) = python_env::python_or_skip("bench python") else {
        return;
    };
    let python = python.display().to_string();
    eprintln!(
        "python bench: 200 B round trips, host = this process, worker = a child process, \
         blocking waits, no pinning; interpreter {python}"
    );
    let line = line_200();
    let payload: Value = serde_json::from_str(&line).expect("the line is JSON");

    let mut group = c.benchmark_group("python_round_trip_200B");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(4));

    let mut floor =
        PipeFloor::spawn(&python, &["-c", MINIMAL_LOOP], SIZE).expect("minimal loop starts");
    floor
        .round_trip(line.as_bytes())
        .expect("minimal loop echoes");
    group.bench_function("minimal_ndjson_loop", |b| {
        b.iter(|| {
            floor
                .round_trip(black_box(line.as_bytes()))
                .expect("round trip")
        })
    });
    drop(floor);

    for (transport, codec) in python_env::transport_codec_cases() {
        let spec = WorkerSpec::new("echo", python.clone(), ["-m", "ferry_worker.echo"]);
        bench_worker(
            &mut group,
            "ferry_python_echo",
            spec,
            transport,
            codec,
            &payload,
        );
        let spec = WorkerSpec::new("echo", FERRY, ["worker", "echo"]);
        bench_worker(
            &mut group,
            "ferry_rust_echo",
            spec,
            transport,
            codec,
            &payload,
        );
    }
    group.finish();
}

criterion_group!(benches, python_round_trip);
criterion_main!(benches);
