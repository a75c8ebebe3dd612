//! Every built-in transport against the one contract: the conformance suite
//! (`ferry::transport::conformance`, feature `conformance`), one `conformance_tests!` line
//! per transport and configuration, then what only the stdio link can show.

use ferry::transport::conformance::MAX_FRAME;
use ferry::transport::{local_socket, memory, shm, stdio, tcp, tls, Link};

fn stdio_pair(max: usize) -> (Link, Link) {
    stdio::pipe_pair(max).expect("pipes")
}

/// stdio switched to length-prefixed frames, as after an accepted `FERRY_STDIO_FRAMING`
/// offer.
fn stdio_framed_pair(max: usize) -> (Link, Link) {
    stdio::framed_pipe_pair(max).expect("pipes")
}

fn local_socket_pair(max: usize) -> (Link, Link) {
    local_socket::pair(&local_socket::SocketOptions::default(), max).expect("socket pair")
}

fn local_socket_abstract_pair(max: usize) -> (Link, Link) {
    let mut options = local_socket::SocketOptions::default();
    options.abstract_namespace = true;
    local_socket::pair(&options, max).expect("abstract socket pair")
}

fn tcp_pair(max: usize) -> (Link, Link) {
    tcp::pair(max).expect("tcp pair")
}

/// TLS over loopback TCP with a self-signed certificate made for the test.
fn tcp_tls_pair(max: usize) -> (Link, Link) {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let options = tls::TlsOptions::new(&cert, &key);
    let worker = tls::TlsConnector::from_ca_file(&cert).expect("trust");
    tcp::tls_pair(&options, &worker, max).expect("tcp tls pair")
}

fn shm_pair_with(options: shm::ShmOptions, max: usize) -> (Link, Link) {
    let (host, worker) = shm::pair(&options, max).expect("shm segment");
    (host.into_link(), worker.into_link())
}

fn shm_pair(max: usize) -> (Link, Link) {
    shm_pair_with(shm::ShmOptions::default(), max)
}

/// An 8 KiB ring: frames over 4 KiB are chunked and records wrap often. (The suite sends
/// a few frames of up to 5000 bytes before reading them on the same thread, so a frame
/// must fit in the ring whole.)
fn shm_small_ring_pair(max: usize) -> (Link, Link) {
    shm_pair_with(shm::ShmOptions::default().capacity(8192), max)
}

/// Always sleeping on the futex: exercises the wake-up protocol on every frame.
fn shm_block_pair(max: usize) -> (Link, Link) {
    shm_pair_with(
        shm::ShmOptions::default()
            .capacity(64 * 1024)
            .wait(shm::WaitStrategy::Block),
        max,
    )
}

ferry::conformance_tests!(memory_transport, memory::pair);
ferry::conformance_tests!(stdio_transport, stdio_pair);
ferry::conformance_tests!(stdio_framed_transport, stdio_framed_pair);
ferry::conformance_tests!(local_socket_transport, local_socket_pair);
ferry::conformance_tests!(local_socket_abstract_transport, local_socket_abstract_pair);
ferry::conformance_tests!(tcp_transport, tcp_pair);
ferry::conformance_tests!(tcp_tls_transport, tcp_tls_pair);
ferry::conformance_tests!(shm_transport, shm_pair);
ferry::conformance_tests!(shm_small_ring_transport, shm_small_ring_pair);
ferry::conformance_tests!(shm_block_transport, shm_block_pair);

mod stdio_specific {
    use super::*;
    use ferry::transport::TransportError;
    use std::io::Write;

    /// A writer on a raw pipe and a stdio link reading the other end.
    fn raw_pipe() -> (std::fs::File, Link) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let (_unused_r, unused_w) = rustix::pipe::pipe().unwrap();
        let link = stdio::link_from_fds(r, unused_w, 64);
        (std::fs::File::from(w), link)
    }

    #[test]
    fn peer_killed_mid_line_gives_disconnected() {
        let (mut w, mut link) = raw_pipe();
        w.write_all(b"{\"half\":").unwrap();
        drop(w);
        let mut buf = Vec::new();
        let err = link.receiver.recv(&mut buf, None).unwrap_err();
        assert!(matches!(err, TransportError::Disconnected), "got {err:?}");
    }

    #[test]
    fn overlong_line_is_refused_then_stream_resyncs() {
        let (mut w, mut link) = raw_pipe();
        w.write_all(&[b'x'; 200]).unwrap();
        w.write_all(b"\nok\n").unwrap();
        let mut buf = Vec::new();
        let err = link.receiver.recv(&mut buf, None).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { max: 64, .. }),
            "got {err:?}"
        );
        link.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"ok");
    }

    #[test]
    fn partial_line_survives_a_timeout() {
        let (mut w, mut link) = raw_pipe();
        w.write_all(b"par").unwrap();
        let mut buf = Vec::new();
        let soon = std::time::Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(
            link.receiver.recv(&mut buf, Some(soon)),
            Err(TransportError::Timeout)
        ));
        w.write_all(b"tial\n").unwrap();
        link.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"partial");
    }

    #[test]
    fn newline_inside_a_frame_is_refused() {
        let (mut host, _worker) = stdio::pipe_pair(MAX_FRAME).unwrap();
        let err = host.sender.send(&[b"a\nb"]).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidFrame(_)),
            "got {err:?}"
        );
    }
}
