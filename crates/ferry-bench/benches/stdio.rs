//! stdio round trips to the Rust and Python echo workers (JSON, payload as a string in
//! `data`) at 64 B, 4 KiB and 1 MiB, beside a bare pipe ping-pong (`ferry floor
//! pipe-echo`) in the same run. The harness and its method: `ferry_bench` and
//! `benches/common`. Run: `cargo bench --bench stdio`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ferry::transport::TransportKind;

fn stdio(c: &mut Criterion) {
    common::transport_suite(c, TransportKind::Stdio);
}

criterion_group!(benches, stdio);
criterion_main!(benches);
