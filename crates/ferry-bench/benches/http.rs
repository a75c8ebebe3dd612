//! The old design's baseline: an HTTP/1.1 keep-alive POST to a small Python HTTP echo
//! worker on loopback (`ferry_bench::HttpPeer`), at 64 B, 4 KiB and 1 MiB, beside the
//! bare TCP ping-pong of the same payload in the same run. Needs any Python 3 (standard
//! library only); without one it prints why and measures nothing.
//! Run: `cargo bench --bench http`.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferry_bench::{default_payloads, payload, python, FloorKind, HttpPeer};
use std::path::Path;

fn http(c: &mut Criterion) {
    let python = match python::any_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED http bench: no Python 3 for the HTTP worker: {why}");
            return;
        }
    };
    let mut group = common::group(c, "http_round_trip");
    for size in default_payloads("http") {
        common::size_group(&mut group, size);
        let message = payload(size);
        let mut floor = FloorKind::Tcp
            .spawn(Path::new(common::FERRY), size)
            .expect("floor peer");
        common::bench_peer(
            &mut group,
            BenchmarkId::new("bare_tcp", size),
            &mut floor,
            &message,
        );
        drop(floor);
        let mut peer = HttpPeer::spawn(&python, size).expect("HTTP worker");
        let id = BenchmarkId::new("http1_keepalive_python", size);
        common::bench_peer(&mut group, id, &mut peer, &message);
    }
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
