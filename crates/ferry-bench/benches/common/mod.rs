//! What every per-transport criterion bench shares: the harness of `ferry_bench`, run
//! under criterion. A bench file names its transport; this module measures, at each of
//! the transport's payload sizes, its bare floor, the Rust echo worker and (when a Python
//! with `ferry_worker` is found) the Python echo worker, in that order, in one group.
//!
//! Method (the same as `ferry bench`; see `ferry_bench`): processes, not threads; the
//! payload written and read whole every round trip; blocking waits; no pinning.
#![allow(dead_code)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ferry::transport::TransportKind;
use ferry_bench::{
    default_payloads, echo_spec, payload, EnginePeer, FloorKind, RoundTrip, WorkerLang,
};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// The `ferry` executable: the Rust echo worker and the floor peers.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry-peer");

/// A group with timings that keep the whole suite within minutes.
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

/// Times `peer`'s round trips of `payload` as benchmark `id`.
pub fn bench_peer(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    peer: &mut dyn RoundTrip,
    payload: &[u8],
) {
    peer.round_trip(payload).expect("first round trip");
    group.bench_with_input(id, &payload.len(), |b, _| {
        b.iter(|| peer.round_trip(black_box(payload)).expect("round trip"))
    });
}

/// Sets the group's throughput and sample size for `size`-byte payloads (fewer samples
/// for the large ones, whose round trips take milliseconds).
pub fn size_group(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(if size >= 1 << 20 { 10 } else { 100 });
}

pub use ferry_bench::python::python_or_skip;

/// The whole suite of one transport: at each default payload size, the floor of its
/// mechanism (when this build has one), then each echo worker.
pub fn transport_suite(c: &mut Criterion, transport: TransportKind) {
    let name = transport.as_str();
    let python = python_or_skip(&format!("{name} bench, Python echo worker"));
    let mut group = group(c, &format!("{name}_round_trip"));
    for size in default_payloads(name) {
        size_group(&mut group, size);
        let message = payload(size);
        if let Some(floor) = FloorKind::for_transport(name) {
            let mut peer = floor.spawn(Path::new(FERRY), size).expect("floor peer");
            let id = BenchmarkId::new(format!("bare_{}", floor.as_str()), size);
            bench_peer(&mut group, id, &mut peer, &message);
        }
        for lang in WorkerLang::ALL {
            let spec = match (lang, &python) {
                (WorkerLang::Rust, _) => echo_spec(lang, Path::new(FERRY)).expect("rust spec"),
                (WorkerLang::Python, Some(p)) => ferry::worker::WorkerSpec::new(
                    "echo",
                    p.display().to_string(),
                    ["-m", "ferry_worker.echo"],
                ),
                (WorkerLang::Python, None) => continue,
                // `ferry bench --cmd` only: not in `ALL`.
                (WorkerLang::Cmd, _) => continue,
            };
            let codec = ferry_bench::codec_for(transport);
            let mut peer = EnginePeer::spawn(spec, transport).expect("echo worker");
            let id = BenchmarkId::new(format!("ferry_{lang}_echo_{codec}"), size);
            bench_peer(&mut group, id, &mut peer, &message);
            peer.shutdown().expect("shutdown");
        }
    }
    group.finish();
}
