//! The host calling the real Rust echo worker over the local socket and TCP transports,
//! with every codec; startup failures; the socket directory's life.

use crate::common;

use common::{fault_bin, ferry_bin, with_watchdog, WATCHDOG};
use ferry::codec::CodecKind;
use ferry::protocol::{Envelope, ErrorCode};
use ferry::transport::{local_socket, tcp, Token, TransportKind, TransportOptions};
use ferry::worker::{CallOptions, SpawnError, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The transports under test, with the options that select each variant.
fn variants(socket_dir: &Path) -> Vec<(&'static str, TransportKind, TransportOptions)> {
    let mut in_dir = TransportOptions::default();
    in_dir.local_socket.dir = Some(socket_dir.to_owned());
    let mut abstract_ns = TransportOptions::default();
    abstract_ns.local_socket.abstract_namespace = true;
    vec![
        ("socket", TransportKind::LocalSocket, in_dir),
        ("socket-abstract", TransportKind::LocalSocket, abstract_ns),
        ("tcp", TransportKind::Tcp, TransportOptions::default()),
    ]
}

fn spec(kind: TransportKind, options: TransportOptions, codec: CodecKind) -> WorkerSpec {
    let mut spec = WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]);
    spec.transport = kind;
    spec.transport_options = options;
    spec.codec = codec;
    spec
}

/// Entries of `dir` that this transport created.
fn ferry_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ferry-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn echo_with_attachments_over_socket_and_tcp_with_every_codec() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, options) in variants(dir.path()) {
            for codec in CodecKind::ALL {
                let mut w = WorkerProcess::spawn(spec(kind, options.clone(), codec))
                    .unwrap_or_else(|e| panic!("{name}/{codec}: spawn: {e}"));
                let info = w.ready_info().expect("ready received");
                assert_eq!(info.pid, w.pid(), "{name}/{codec}");
                let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
                for i in 0..20 {
                    let data = json!({"i": i, "text": "héllo \n \u{1F980}"});
                    let request = Envelope::request("", "echo", data.clone());
                    let reply = w
                        .call_with(
                            request,
                            &[&image, b"\n\0raw"],
                            &CallOptions::default(),
                            |_| {},
                        )
                        .unwrap_or_else(|e| panic!("{name}/{codec}: call: {e}"));
                    assert_eq!(reply.data, data, "{name}/{codec}");
                    assert_eq!(reply.attachments, vec![image.clone(), b"\n\0raw".to_vec()]);
                }
                let status = w.shutdown().unwrap();
                assert!(status.success(), "{name}/{codec}: worker exit {status}");
                assert!(ferry_entries(dir.path()).is_empty(), "{name}/{codec}");
            }
        }
    });
}

#[test]
fn sixteen_mib_attachment_round_trips_over_the_socket() {
    with_watchdog(WATCHDOG, || {
        let big: Vec<u8> = (0..16 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for (kind, codec) in [
            (TransportKind::LocalSocket, CodecKind::MsgPack),
            (TransportKind::LocalSocket, CodecKind::Bincode),
            (TransportKind::Tcp, CodecKind::Json),
        ] {
            let mut w = WorkerProcess::spawn(spec(kind, TransportOptions::default(), codec))
                .expect("echo worker starts");
            for _ in 0..2 {
                let request = Envelope::request("", "echo", json!({"name": "big.bin"}));
                let reply = w
                    .call_with(request, &[&big], &CallOptions::default(), |_| {})
                    .unwrap();
                assert_eq!(reply.attachments.len(), 1);
                assert!(reply.attachments[0] == big, "{kind}/{codec}: bytes differ");
            }
            w.shutdown().unwrap();
        }
    });
}

#[test]
fn progress_and_cancel_work_over_socket_and_tcp() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, options) in variants(dir.path()) {
            let mut w = WorkerProcess::spawn(spec(kind, options, CodecKind::MsgPack)).unwrap();
            let mut seen = Vec::new();
            w.call("sleep", json!({"ms": 30, "steps": 3}), |e| {
                seen.push(e.data.as_ref().unwrap()["progress"].as_f64().unwrap())
            })
            .unwrap();
            assert_eq!(seen.len(), 3, "{name}");
            let request = Envelope::request("", "sleep", json!({"ms": 40_000, "steps": 4_000}));
            let options = CallOptions::default().timeout(Duration::from_millis(100));
            let err = w.call_with(request, &[], &options, |_| {}).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Timeout, "{name}");
            let reply = w.call("echo", json!({"after": "cancel"}), |_| {}).unwrap();
            assert_eq!(reply.data, json!({"after": "cancel"}), "{name}");
            w.shutdown().unwrap();
        }
    });
}

#[test]
fn worker_exiting_before_connecting_fails_the_start() {
    with_watchdog(WATCHDOG, || {
        for kind in [TransportKind::LocalSocket, TransportKind::Tcp] {
            let mut spec = WorkerSpec::new("fault", fault_bin(), ["exit-before-ready"]);
            spec.transport = kind;
            let err = WorkerProcess::spawn(spec).unwrap_err();
            assert!(
                matches!(err, SpawnError::ExitedBeforeReady { .. }),
                "{kind}: got {err:?}"
            );
        }
    });
}

#[test]
fn worker_never_connecting_times_out_at_startup() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        for kind in [TransportKind::LocalSocket, TransportKind::Tcp] {
            let mut spec = WorkerSpec::new("fault", fault_bin(), ["never-ready", "30"]);
            spec.transport = kind;
            spec.transport_options.local_socket.dir = Some(dir.path().to_owned());
            spec.startup_timeout = Duration::from_millis(300);
            let err = WorkerProcess::spawn(spec).unwrap_err();
            assert!(
                matches!(err, SpawnError::StartupTimeout(_)),
                "{kind}: got {err:?}"
            );
            assert!(ferry_entries(dir.path()).is_empty(), "{kind}");
        }
    });
}

#[test]
fn configured_tcp_address_and_token_are_used() {
    with_watchdog(WATCHDOG, || {
        let mut options = TransportOptions::default();
        options.tcp.listen = Some("127.0.0.1:0".parse().unwrap());
        options.token = Some(Token::new("a shared secret").unwrap());
        let mut w =
            WorkerProcess::spawn(spec(TransportKind::Tcp, options, CodecKind::Json)).unwrap();
        let reply = w.call("echo", json!({"x": 1}), |_| {}).unwrap();
        assert_eq!(reply.data, json!({"x": 1}));
        w.shutdown().unwrap();
    });
}

#[test]
fn socket_directory_is_private_and_removed_with_the_listener() {
    let base = tempfile::tempdir().unwrap();
    let mut options = local_socket::SocketOptions::default();
    options.dir = Some(base.path().to_owned());
    options.abstract_namespace = false;
    let listener =
        local_socket::SocketListener::bind(&options, Token::random().unwrap(), 1024).unwrap();
    let dir = listener.dir().expect("a directory").to_owned();
    assert!(Path::new(listener.name()).starts_with(&dir));
    assert!(Path::new(listener.name()).exists(), "socket file exists");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "private directory mode");
    }
    drop(listener);
    assert!(!dir.exists(), "directory removed with the listener");
    assert!(ferry_entries(base.path()).is_empty());
}

#[test]
fn tcp_listener_advertises_loopback_for_an_unspecified_address() {
    let mut options = tcp::TcpOptions::default();
    options.listen = Some("0.0.0.0:0".parse().unwrap());
    options.advertise = None;
    let listener = tcp::TcpListener::bind(&options, Token::random().unwrap(), 1024).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(listener.address(), format!("127.0.0.1:{port}"));
}

#[test]
fn transport_names_parse_with_the_local_socket_alias() {
    assert_eq!(
        "socket".parse::<TransportKind>().unwrap(),
        TransportKind::LocalSocket
    );
    assert_eq!(
        "local_socket".parse::<TransportKind>().unwrap(),
        TransportKind::LocalSocket
    );
    assert_eq!("tcp".parse::<TransportKind>().unwrap(), TransportKind::Tcp);
    assert_eq!(TransportKind::LocalSocket.to_string(), "socket");
    let err = "pigeon".parse::<TransportKind>().unwrap_err().to_string();
    assert!(err.contains("stdio, socket, tcp"), "{err}");
    let kind: TransportKind = serde_json::from_str("\"local_socket\"").unwrap();
    assert_eq!(kind, TransportKind::LocalSocket);
    assert_eq!(serde_json::to_string(&kind).unwrap(), "\"socket\"");
}
