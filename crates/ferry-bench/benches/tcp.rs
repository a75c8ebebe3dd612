//! TCP round trips on loopback to the Rust and Python echo workers (MessagePack, payload
//! as one raw attachment) at 64 B, 4 KiB and 1 MiB, beside a bare TCP ping-pong (`ferry
//! floor tcp-echo`, `TCP_NODELAY`) in the same run. The harness and its method:
//! `ferry_bench` and `benches/common`. Run: `cargo bench --bench tcp`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ferry::transport::TransportKind;

fn tcp(c: &mut Criterion) {
    common::transport_suite(c, TransportKind::Tcp);
}

criterion_group!(benches, tcp);
criterion_main!(benches);
