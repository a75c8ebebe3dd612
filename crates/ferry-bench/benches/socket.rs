//! Unix-socket round trips to the Rust and Python echo workers (MessagePack, payload as
//! one raw attachment) at 64 B, 4 KiB, 1 MiB and 16 MiB, beside a bare Unix-socket
//! ping-pong (`ferry floor uds-echo`) in the same run. The harness and its method:
//! `ferry_bench` and `benches/common`. Run: `cargo bench --bench socket`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ferry::transport::TransportKind;

fn socket(c: &mut Criterion) {
    common::transport_suite(c, TransportKind::LocalSocket);
}

criterion_group!(benches, socket);
criterion_main!(benches);
