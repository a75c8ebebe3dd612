//! local_socket and tcp round trips to the Rust echo worker, beside a bare Unix-socket and a
//! bare TCP ping-pong in the same run.
//!
//! Method: two processes (host = this bench, peer = a child), blocking reads on both sides,
//! no pinning (the scheduler decides), payload written and read every time. The bare peers
//! (`ferry floor uds-echo` / `tcp-echo`) echo fixed-size messages with no framing or
//! parsing over a socket of the same kind (TCP with `TCP_NODELAY`). The engine path sends
//! a MessagePack request envelope with the payload as one raw attachment; the worker decodes
//! it, runs the echo handler (which copies the attachment into its reply), encodes the
//! response; the host decodes it and copies the attachment out. The ratio of the two medians
//! is the engine's cost. Run: `cargo bench --bench socket`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::codec::CodecKind;
use ferry::floor::{SocketFloor, SocketKind};
use ferry::protocol::Envelope;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::Value;
use std::hint::black_box;
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn round_trips(c: &mut Criterion, group_name: &str, floor: SocketKind, transport: TransportKind) {
    let mut group = c.benchmark_group(group_name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (floor_cmd, floor_name) = match floor {
        SocketKind::Unix => ("uds-echo", "bare_uds"),
        SocketKind::Tcp => ("tcp-echo", "bare_tcp"),
    };
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let size_arg = size.to_string();
        let message = vec![b'x'; size];
        let mut bare = SocketFloor::spawn(floor, FERRY, &["floor", floor_cmd, &size_arg], size)
            .expect("floor peer");
        group.bench_with_input(BenchmarkId::new(floor_name, size), &size, |b, _| {
            b.iter(|| bare.round_trip(black_box(&message)).expect("round trip"))
        });
        drop(bare);

        let mut spec = WorkerSpec::new("echo", FERRY, ["worker", "echo"]);
        spec.transport = transport;
        spec.codec = CodecKind::MsgPack;
        let mut worker = WorkerProcess::spawn(spec).expect("echo worker");
        let options = CallOptions::default();
        let name = format!("ferry_rust_echo_{}_msgpack", transport.as_str());
        group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
            b.iter(|| {
                let request = Envelope::request("", "echo", Value::Null);
                let reply = worker
                    .call_with(request, &[black_box(&message)], &options, |_| {})
                    .expect("call");
                black_box(reply);
            })
        });
        worker.shutdown().expect("shutdown");
    }
    group.finish();
}

fn socket_round_trip(c: &mut Criterion) {
    round_trips(
        c,
        "socket_round_trip",
        SocketKind::Unix,
        TransportKind::LocalSocket,
    );
}

fn tcp_round_trip(c: &mut Criterion) {
    round_trips(c, "tcp_round_trip", SocketKind::Tcp, TransportKind::Tcp);
}

criterion_group!(benches, socket_round_trip, tcp_round_trip);
criterion_main!(benches);
