//! TLS on the tcp transport with self-made certificates (rcgen): a round trip, a client
//! that does not speak TLS, a worker that trusts another CA, files that cannot be used.

use ferry::transport::tcp::{self, TcpListener, TcpOptions};
use ferry::transport::tls::{TlsConnector, TlsOptions};
use ferry::transport::{Token, TransportError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as `NAME.pem` and
/// `NAME.key` into `dir`; returns the two paths.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// A host listening with TLS, accepting on a thread by a deadline far away.
fn tls_host(
    options: TlsOptions,
) -> (
    String,
    Token,
    std::thread::JoinHandle<Result<ferry::transport::Link, TransportError>>,
) {
    let mut tcp = TcpOptions::default();
    tcp.tls = Some(options);
    let listener = TcpListener::bind(&tcp, Token::random().unwrap(), 1 << 20).unwrap();
    let address = listener.address().to_owned();
    let token = listener.token().clone();
    let host =
        std::thread::spawn(move || listener.accept(None, Instant::now() + Duration::from_secs(60)));
    (address, token, host)
}

fn round_trip(host: &mut ferry::transport::Link, worker: &mut ferry::transport::Link) {
    let big = vec![7u8; 300_000];
    worker.sender.send(&[b"hello ", &big]).unwrap();
    let mut buf = Vec::new();
    host.receiver.recv(&mut buf, None).unwrap();
    assert_eq!(&buf[..6], b"hello ");
    assert_eq!(buf.len(), 6 + big.len());
    host.sender.send(&[b"back"]).unwrap();
    worker.receiver.recv(&mut buf, None).unwrap();
    assert_eq!(buf, b"back");
}

#[test]
fn tls_round_trip_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "host");
    let (address, token, host) = tls_host(TlsOptions::new(&cert, &key));
    let connector = TlsConnector::from_ca_file(&cert).unwrap();
    let mut worker = tcp::connect_tls(&address, &token, &connector, 1 << 20).unwrap();
    let mut host = host.join().unwrap().unwrap();
    round_trip(&mut host, &mut worker);
    // Closing the worker's end is end of stream for the host, after what was sent.
    worker.sender.send(&[b"last"]).unwrap();
    drop(worker);
    let mut buf = Vec::new();
    host.receiver.recv(&mut buf, None).unwrap();
    assert_eq!(buf, b"last");
    assert!(matches!(
        host.receiver.recv(&mut buf, None),
        Err(TransportError::Disconnected)
    ));
}

#[test]
fn the_server_name_can_be_set_apart_from_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "host");
    let (address, token, host) = tls_host(TlsOptions::new(&cert, &key));
    let good = TlsConnector::from_ca_file(&cert)
        .unwrap()
        .with_server_name("localhost")
        .unwrap();
    let wrong = TlsConnector::from_ca_file(&cert)
        .unwrap()
        .with_server_name("elsewhere.example")
        .unwrap();
    let err = tcp::connect_tls(&address, &token, &wrong, 1 << 20).unwrap_err();
    assert!(matches!(err, TransportError::TlsHandshake(_)), "{err:?}");
    let mut worker = tcp::connect_tls(&address, &token, &good, 1 << 20).unwrap();
    let mut host = host.join().unwrap().unwrap();
    round_trip(&mut host, &mut worker);
}

#[test]
fn plaintext_client_is_dropped_and_the_real_worker_still_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "host");
    let (address, token, host) = tls_host(TlsOptions::new(&cert, &key));
    // A plaintext ferry worker with the right token: the host's TLS refuses its hello, and
    // the client sees an error (never a link).
    let err = tcp::connect(&address, &token, 1 << 20).unwrap_err();
    assert!(
        !matches!(err, TransportError::Timeout),
        "refused, not left waiting: {err:?}"
    );
    // A client that connects and closes without a word.
    drop(std::net::TcpStream::connect(&address).unwrap());
    let connector = TlsConnector::from_ca_file(&cert).unwrap();
    let mut worker = tcp::connect_tls(&address, &token, &connector, 1 << 20).unwrap();
    let mut host = host.join().unwrap().unwrap();
    round_trip(&mut host, &mut worker);
}

#[test]
fn worker_trusting_another_ca_fails_the_handshake_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "host");
    let (other, _) = self_signed(dir.path(), "other");
    let (address, token, host) = tls_host(TlsOptions::new(&cert, &key));
    let stranger = TlsConnector::from_ca_file(&other).unwrap();
    let err = tcp::connect_tls(&address, &token, &stranger, 1 << 20).unwrap_err();
    assert!(matches!(err, TransportError::TlsHandshake(_)), "{err:?}");
    assert_eq!(err.code(), ferry::protocol::ErrorCode::Protocol);
    // The right CA but the wrong token: refused inside TLS.
    let connector = TlsConnector::from_ca_file(&cert).unwrap();
    let wrong = Token::new("not the token").unwrap();
    let err = tcp::connect_tls(&address, &wrong, &connector, 1 << 20).unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");
    let mut worker = tcp::connect_tls(&address, &token, &connector, 1 << 20).unwrap();
    let mut host = host.join().unwrap().unwrap();
    round_trip(&mut host, &mut worker);
}

#[test]
fn unusable_certificate_files_are_tls_config_errors_at_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "host");
    let (_, other_key) = self_signed(dir.path(), "other");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN NOTHING-----\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        ("certificate chain", TlsOptions::new(&missing, &key)),
        ("certificate chain", TlsOptions::new(&junk, &key)),
        ("private key", TlsOptions::new(&cert, &missing)),
        ("private key", TlsOptions::new(&cert, &cert)),
        ("certificate and key", TlsOptions::new(&cert, &other_key)),
    ];
    for (want, options) in cases {
        let mut tcp = TcpOptions::default();
        tcp.tls = Some(options.clone());
        let err = TcpListener::bind(&tcp, Token::random().unwrap(), 1024).unwrap_err();
        assert!(
            matches!(&err, TransportError::TlsConfig { item, .. } if *item == want),
            "{options:?}: {err:?}"
        );
        assert!(options.check().is_err());
    }
    assert!(TlsOptions::new(&cert, &key).check().is_ok());
    let err = TlsOptions::new(&cert, &key)
        .server_name("not a name!")
        .check()
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::TlsConfig {
                item: "server name",
                ..
            }
        ),
        "{err:?}"
    );
}
