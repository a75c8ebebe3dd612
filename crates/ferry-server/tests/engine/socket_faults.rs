//! The local socket and TCP transports against misbehaving peers and crashed hosts: a peer
//! killed mid-frame, truncated and oversized frames, wrong tokens, a host killed with
//! SIGKILL before and after its worker connected.

use crate::common;

use common::{fault_bin, ferry_bin, with_watchdog, WATCHDOG};
use ferry::transport::{local_socket, tcp, Link, Token, TransportError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// A peer written from docs/protocol.md alone: connects, does the handshake, then sends a
/// frame header announcing 1000 bytes and only 10 of them, says `sent`, and sleeps.
const HALF_FRAME_PEER: &str = r#"
import socket, struct, sys, time
kind, addr, token = sys.argv[1:4]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr)
else:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
hello = b"FRY1" + token.encode()
s.sendall(struct.pack("<I", len(hello)) + hello)
verdict = b""
while len(verdict) < 9:
    verdict += s.recv(9 - len(verdict))
assert verdict == struct.pack("<I", 5) + b"FRY1\x00", verdict
s.sendall(struct.pack("<I", 1000) + b"x" * 10)
print("sent", flush=True)
time.sleep(60)
"#;

/// Starts the half-frame peer against a host listening at `addr`, accepts it, waits until
/// it has sent its half frame, and kills it with SIGKILL. Returns the host's link.
fn accept_half_frame_peer_then_kill_it(
    kind: &str,
    addr: &str,
    token: &Token,
    accept: impl FnOnce(&mut std::process::Child) -> Link,
) -> Link {
    let mut peer = Command::new("python3")
        .args(["-c", HALF_FRAME_PEER, kind, addr, token.as_str()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let link = accept(&mut peer);
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sent");
    peer.kill().unwrap();
    peer.wait().unwrap();
    link
}

#[test]
fn peer_killed_mid_frame_returns_disconnected() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let mut options = local_socket::SocketOptions::default();
        options.dir = Some(dir.path().to_owned());
        options.abstract_namespace = false;
        let listener =
            local_socket::SocketListener::bind(&options, Token::random().unwrap(), MAX).unwrap();
        let (name, token) = (listener.name().to_owned(), listener.token().clone());
        let mut link = accept_half_frame_peer_then_kill_it("unix", &name, &token, |child| {
            listener.accept(Some(child), soon()).unwrap()
        });
        let mut buf = Vec::new();
        let err = link.receiver.recv(&mut buf, None).unwrap_err();
        assert!(matches!(err, TransportError::Disconnected), "got {err:?}");

        let listener =
            tcp::TcpListener::bind(&tcp::TcpOptions::default(), Token::random().unwrap(), MAX)
                .unwrap();
        let (addr, token) = (listener.address().to_owned(), listener.token().clone());
        let mut link = accept_half_frame_peer_then_kill_it("tcp", &addr, &token, |child| {
            listener.accept(Some(child), soon()).unwrap()
        });
        let err = link.receiver.recv(&mut buf, None).unwrap_err();
        assert!(matches!(err, TransportError::Disconnected), "got {err:?}");
    });
}

/// A host link and a raw TCP stream that has passed the handshake, for writing bytes by hand.
fn host_and_raw_peer() -> (Link, std::net::TcpStream) {
    let listener =
        tcp::TcpListener::bind(&tcp::TcpOptions::default(), Token::random().unwrap(), MAX).unwrap();
    let token = listener.token().as_str().to_owned();
    let mut raw = std::net::TcpStream::connect(listener.address()).unwrap();
    let hello = [b"FRY1".as_slice(), token.as_bytes()].concat();
    raw.write_all(&(hello.len() as u32).to_le_bytes()).unwrap();
    raw.write_all(&hello).unwrap();
    let link = listener.accept(None, soon()).unwrap();
    let mut verdict = [0u8; 9];
    raw.read_exact(&mut verdict).unwrap();
    assert_eq!(&verdict, b"\x05\0\0\0FRY1\0");
    (link, raw)
}

#[test]
fn oversized_length_prefix_is_refused_before_the_body_arrives() {
    with_watchdog(WATCHDOG, || {
        let (mut link, mut raw) = host_and_raw_peer();
        // Announces 4 GiB - 1 and sends none of it: the refusal cannot have waited for (or
        // allocated) the body.
        raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let mut buf = Vec::new();
        let err = link.receiver.recv(&mut buf, Some(soon())).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { size, max: MAX } if size == u32::MAX as usize),
            "got {err:?}"
        );
        assert_eq!(
            buf.capacity(),
            0,
            "nothing was allocated into the caller's buffer"
        );
    });
}

#[test]
fn truncated_frame_is_disconnected_not_a_short_frame() {
    with_watchdog(WATCHDOG, || {
        let (mut link, mut raw) = host_and_raw_peer();
        raw.write_all(&100u32.to_le_bytes()).unwrap();
        raw.write_all(&[1; 40]).unwrap();
        let mut buf = Vec::new();
        let short = Instant::now() + Duration::from_millis(50);
        let err = link.receiver.recv(&mut buf, Some(short)).unwrap_err();
        assert!(matches!(err, TransportError::Timeout), "got {err:?}");
        drop(raw);
        let err = link.receiver.recv(&mut buf, Some(soon())).unwrap_err();
        assert!(matches!(err, TransportError::Disconnected), "got {err:?}");
        assert!(buf.is_empty(), "no partial frame is handed out");
    });
}

#[test]
fn partial_frame_survives_a_timeout() {
    with_watchdog(WATCHDOG, || {
        let (mut link, mut raw) = host_and_raw_peer();
        raw.write_all(&[11, 0]).unwrap();
        let mut buf = Vec::new();
        let short = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            link.receiver.recv(&mut buf, Some(short)),
            Err(TransportError::Timeout)
        ));
        raw.write_all(&[0, 0, b'h', b'e', b'l']).unwrap();
        let short = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            link.receiver.recv(&mut buf, Some(short)),
            Err(TransportError::Timeout)
        ));
        raw.write_all(b"lo world").unwrap();
        link.receiver.recv(&mut buf, Some(soon())).unwrap();
        assert_eq!(buf, b"hello world");
    });
}

#[test]
fn wrong_token_is_refused_and_the_right_worker_still_gets_in() {
    with_watchdog(WATCHDOG, || {
        let right = Token::new("the right token").unwrap();
        let wrong = Token::new("a guess").unwrap();

        let mut options = local_socket::SocketOptions::default();
        options.abstract_namespace = true;
        let listener = local_socket::SocketListener::bind(&options, right.clone(), MAX).unwrap();
        let name = listener.name().to_owned();
        let (n, r) = (name.clone(), right.clone());
        let peers = std::thread::spawn(move || {
            let stranger = local_socket::connect(&n, &wrong, MAX);
            let worker = local_socket::connect(&n, &r, MAX);
            (stranger, worker)
        });
        let mut host = listener.accept(None, soon()).unwrap();
        let (stranger, worker) = peers.join().unwrap();
        let err = stranger.unwrap_err();
        assert!(matches!(err, TransportError::Refused(_)), "got {err:?}");
        assert_eq!(err.code(), ferry::protocol::ErrorCode::Protocol);
        let mut worker = worker.unwrap();
        worker.sender.send(&[b"admitted"]).unwrap();
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, Some(soon())).unwrap();
        assert_eq!(buf, b"admitted");

        let listener =
            tcp::TcpListener::bind(&tcp::TcpOptions::default(), right.clone(), MAX).unwrap();
        let addr = listener.address().to_owned();
        let peers = std::thread::spawn(move || {
            let stranger = tcp::connect(&addr, &Token::new("right token").unwrap(), MAX);
            let worker = tcp::connect(&addr, &right, MAX);
            (stranger, worker)
        });
        let mut host = listener.accept(None, soon()).unwrap();
        let (stranger, worker) = peers.join().unwrap();
        assert!(matches!(stranger, Err(TransportError::Refused(_))));
        worker.unwrap().sender.send(&[b"admitted"]).unwrap();
        host.receiver.recv(&mut buf, Some(soon())).unwrap();
        assert_eq!(buf, b"admitted");
    });
}

#[test]
fn silent_stranger_does_not_block_the_accept_forever() {
    with_watchdog(WATCHDOG, || {
        let listener =
            tcp::TcpListener::bind(&tcp::TcpOptions::default(), Token::random().unwrap(), MAX)
                .unwrap();
        let addr = listener.address().to_owned();
        let token = listener.token().clone();
        // Connects and says nothing, holding the connection open.
        let _silent = std::net::TcpStream::connect(&addr).unwrap();
        let worker = std::thread::spawn(move || tcp::connect(&addr, &token, MAX));
        let _host = listener.accept(None, soon()).unwrap();
        worker.join().unwrap().unwrap();
    });
}

/// Entries of `dir` that the socket transport created.
fn ferry_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ferry-"))
        .collect()
}

fn wait_for(mut done: impl FnMut() -> bool) {
    while !done() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ferry_call_socket(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(["call", "--transport", "socket", "--codec", "msgpack"])
        .arg("--socket-dir")
        .arg(dir)
        .args(extra);
    cmd
}

#[test]
fn host_killed_while_waiting_leaves_no_path_that_blocks_the_next_start() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let worker = format!("{} never-ready 5", fault_bin());
        let mut host = ferry_call_socket(dir.path(), &["--cmd", &worker, "echo"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(|| !ferry_entries(dir.path()).is_empty());
        host.kill().unwrap();
        host.wait().unwrap();
        let stale = ferry_entries(dir.path());
        assert_eq!(
            stale.len(),
            1,
            "the killed host's directory is left: {stale:?}"
        );

        let out = ferry_call_socket(dir.path(), &["echo", r#"{"after":"crash"}"#])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(data, serde_json::json!({"after": "crash"}));
        assert!(
            ferry_entries(dir.path()).is_empty(),
            "the stale directory was removed and the new one too: {:?}",
            ferry_entries(dir.path())
        );
    });
}

#[test]
fn host_killed_after_connecting_leaves_nothing_behind() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let mut host = ferry_call_socket(dir.path(), &["sleep", r#"{"ms":60000,"steps":600}"#])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(host.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("progress") {
            line.clear();
            assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "host ended early");
        }
        assert!(
            ferry_entries(dir.path()).is_empty(),
            "a connected host keeps no socket path"
        );
        host.kill().unwrap();
        host.wait().unwrap();
        // The worker sees its host gone (end of stream) and exits, closing stderr.
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);

        let out = ferry_call_socket(dir.path(), &["echo"]).output().unwrap();
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(ferry_entries(dir.path()).is_empty());
    });
}

#[test]
fn ferry_call_works_over_socket_and_tcp() {
    for transport in ["socket", "local_socket", "tcp"] {
        for codec in ["json", "msgpack", "bincode"] {
            let out = Command::new(ferry_bin())
                .args(["call", "--transport", transport, "--codec", codec])
                .args(["echo", r#"{"prompt":"a"}"#])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{transport}/{codec}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(data, serde_json::json!({"prompt": "a"}));
        }
    }
}
