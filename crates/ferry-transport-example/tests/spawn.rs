//! A real worker over the example transport, through the engine's public API only:
//! `WorkerSpec::custom_transport` → `WorkerProcess::spawn`, and a `Pool` of them.

use ferry::codec::CodecKind;
use ferry::pool::{Pool, PoolConfig, WorkerState};
use ferry::protocol::Envelope;
use ferry::transport::{PendingLink, Transport, TransportError, TransportOptions};
use ferry::worker::{CallOptions, SpawnError, WorkerProcess, WorkerSpec};
use ferry_transport_example::PipeTransport;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn spec() -> WorkerSpec {
    let mut spec = WorkerSpec::new(
        "echo",
        env!("CARGO_BIN_EXE_ferry-example-worker"),
        [] as [&str; 0],
    )
    .custom_transport(PipeTransport);
    spec.startup_timeout = Duration::from_secs(20);
    spec
}

#[test]
fn a_worker_process_answers_over_the_pipes() {
    let mut worker = WorkerProcess::spawn(spec()).expect("spawn");
    let ready = worker.ready_info().expect("ready");
    assert_eq!(ready.worker_type, "echo");
    assert_eq!(ready.pid, worker.pid());
    let reply = worker
        .call("echo", json!({"hello": "pipes"}), |_| {})
        .unwrap();
    assert_eq!(reply.data, json!({"hello": "pipes"}));
    // Progress events cross too.
    let mut events = 0;
    let reply = worker
        .call("sleep", json!({"ms": 20, "steps": 4}), |_| events += 1)
        .unwrap();
    assert_eq!(reply.data["steps"], 4);
    assert_eq!(events, 4);
    let status = worker.shutdown().unwrap();
    assert!(status.success(), "worker exited with {status}");
}

#[test]
fn attachments_cross_with_a_binary_codec() {
    let mut spec = spec();
    spec.codec = CodecKind::MsgPack;
    let mut worker = WorkerProcess::spawn(spec).expect("spawn");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let request = Envelope::request("", "echo", json!({"n": 1}));
    let reply = worker
        .call_with(
            request,
            &[b"\n\0small", &big],
            &CallOptions::default(),
            |_| {},
        )
        .unwrap();
    assert_eq!(reply.data, json!({"n": 1}));
    assert_eq!(reply.attachments, vec![b"\n\0small".to_vec(), big]);
    worker.shutdown().unwrap();
}

#[test]
fn a_pool_of_workers_over_the_pipes() {
    let config = PoolConfig::default().workers(2, 2).max_in_flight(2);
    let pool = Arc::new(Pool::start(spec(), config).expect("pool"));
    assert_eq!(pool.transport_name(), "pipes");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let data = json!({"t": t, "i": i});
                    let reply = pool
                        .call(Envelope::request("", "echo", data.clone()), &[], |_| {})
                        .unwrap();
                    assert_eq!(reply.data, data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let status = pool.status();
    assert_eq!(status.len(), 2);
    assert!(
        status.iter().all(|w| w.state == WorkerState::Ready),
        "{status:?}"
    );
    pool.shutdown();
}

#[test]
fn a_worker_that_exits_before_ready_fails_the_start() {
    let spec = WorkerSpec::new("echo", "true", [] as [&str; 0]).custom_transport(PipeTransport);
    match WorkerProcess::spawn(spec) {
        Err(SpawnError::ExitedBeforeReady { .. }) => {}
        other => panic!("expected ExitedBeforeReady, got {other:?}"),
    }
}

/// The example transport under another name.
#[derive(Debug)]
struct Named(&'static str);

impl Transport for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn framing(&self) -> ferry::codec::Framing {
        PipeTransport.framing()
    }
    fn prepare(
        &self,
        options: &TransportOptions,
        max_frame: usize,
    ) -> Result<Box<dyn PendingLink>, TransportError> {
        PipeTransport.prepare(options, max_frame)
    }
}

#[test]
fn a_custom_transport_cannot_take_a_builtin_or_malformed_name() {
    for name in ["tcp", "socket", "local_socket", "", "two words", "a=b"] {
        let spec = spec().custom_transport(Named(name));
        match WorkerProcess::spawn(spec) {
            Err(SpawnError::Transport(TransportError::InvalidOption { option, .. })) => {
                assert_eq!(option, "transport")
            }
            other => panic!("{name:?}: expected InvalidOption, got {other:?}"),
        }
    }
}

#[test]
fn a_codec_that_does_not_fit_the_framing_is_refused_before_the_spawn() {
    /// Announces line framing (which no binary codec fits).
    #[derive(Debug)]
    struct Lines;
    impl Transport for Lines {
        fn name(&self) -> &str {
            "lines"
        }
        fn framing(&self) -> ferry::codec::Framing {
            ferry::codec::Framing::Lines
        }
        fn prepare(
            &self,
            _: &TransportOptions,
            _: usize,
        ) -> Result<Box<dyn PendingLink>, TransportError> {
            panic!("prepared although the codec cannot work")
        }
    }
    let mut spec = spec().custom_transport(Lines);
    spec.codec = CodecKind::MsgPack;
    assert!(matches!(
        WorkerProcess::spawn(spec),
        Err(SpawnError::Codec(_))
    ));
}
