//! TLS for the tcp transport (rustls, TLS 1.2 and 1.3, the `ring` crypto provider).
//!
//! The host presents a certificate chain and key read from PEM files
//! ([`TlsOptions`]); the worker verifies it against the CA it is told to trust
//! ([`TlsConnector`]), for the server name it expects. The TLS handshake comes first; the
//! token handshake and then the frames go inside TLS, unchanged.
//!
//! A spawned worker is told by its environment: `FERRY_TLS=1`, `FERRY_TLS_CA` (a PEM file of
//! the certificates to trust) and, optionally, `FERRY_TLS_SERVER_NAME` (default: the host
//! part of `FERRY_TCP_ADDR`). See `docs/transports.md`.
//!
//! # How the link shares one TLS session between its halves
//!
//! A TLS session is one state machine for both directions, but a link's receiver and
//! sender are used from two threads at once, and a receiver may wait for a frame for as
//! long as it likes. So the socket is non-blocking and the session sits behind a mutex that
//! is only ever held for non-blocking work: decrypting what the socket has, encrypting a
//! write into records and pushing them to the socket as far as it takes them. Waiting (for
//! the socket to become readable or writable) happens with the mutex released. A reader
//! waiting for a frame therefore never holds up a writer, and the other way round.
//!
//! The plaintext tcp link does not go through this module at all.

use super::framed::{self, FramedReceiver, FramedSender, WireRead, WireWrite};
use super::{remaining, Link, TransportError};
use crate::protocol::env::{FERRY_TCP_ADDR, FERRY_TLS, FERRY_TLS_CA, FERRY_TLS_SERVER_NAME};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Host-side TLS settings of the tcp transport: the certificate chain and private key the
/// host presents, and what a spawned worker is told to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file with the host's certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM file with the host's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM file of the certificates a spawned worker trusts (`FERRY_TLS_CA`); default
    /// [`cert_chain`](Self::cert_chain) itself, which suits a self-signed certificate.
    pub trust: Option<PathBuf>,
    /// The name a spawned worker verifies the certificate for (`FERRY_TLS_SERVER_NAME`);
    /// default the host part of the address the worker connects to.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// TLS with the certificate chain and key in these PEM files.
    pub fn new(cert_chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        TlsOptions {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            trust: None,
            server_name: None,
        }
    }

    /// Sets the PEM file of certificates a spawned worker trusts.
    pub fn trust(mut self, ca: impl Into<PathBuf>) -> Self {
        self.trust = Some(ca.into());
        self
    }

    /// Sets the name a spawned worker verifies the certificate for.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads and checks every file named (the certificate chain, the key and whether they
    /// match, the trusted certificates) and the server name, as a host does before it
    /// listens; [`TransportError::TlsConfig`] names what is wrong.
    pub fn check(&self) -> Result<(), TransportError> {
        self.acceptor()?;
        let trust = self.trust.as_deref().unwrap_or(&self.cert_chain);
        roots(trust)?;
        if let Some(name) = &self.server_name {
            server_name(name)?;
        }
        Ok(())
    }

    /// The host's side: a server configuration from the files.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TransportError> {
        let chain = certificates(&self.cert_chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key).map_err(|e| {
            TransportError::TlsConfig {
                item: "private key",
                reason: format!("{}: {e}", self.private_key.display()),
            }
        })?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| config_err("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TransportError::TlsConfig {
                item: "certificate and key",
                reason: format!(
                    "{} with {}: {e}",
                    self.cert_chain.display(),
                    self.private_key.display()
                ),
            })?;
        Ok(TlsAcceptor(Arc::new(config)))
    }

    /// The variables a spawned worker needs, paths made absolute (the worker may run in
    /// another folder).
    pub(crate) fn worker_env(&self) -> Result<Vec<(&'static str, String)>, TransportError> {
        let trust = self.trust.as_deref().unwrap_or(&self.cert_chain);
        let trust = std::path::absolute(trust)?;
        let trust = trust.to_str().ok_or_else(|| TransportError::TlsConfig {
            item: "trusted certificates",
            reason: format!("{} is not UTF-8", trust.display()),
        })?;
        let mut env = vec![
            (FERRY_TLS, "1".to_owned()),
            (FERRY_TLS_CA, trust.to_owned()),
        ];
        if let Some(name) = &self.server_name {
            env.push((FERRY_TLS_SERVER_NAME, name.clone()));
        }
        Ok(env)
    }
}

/// The ring provider, named explicitly so no process-wide default is consulted.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_err(item: &'static str, e: impl fmt::Display) -> TransportError {
    TransportError::TlsConfig {
        item,
        reason: e.to_string(),
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    path: &Path,
    item: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bad = |reason: String| TransportError::TlsConfig {
        item,
        reason: format!("{}: {reason}", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// The trust anchors in a PEM file.
fn roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, "trusted certificates")? {
        store.add(cert).map_err(|e| TransportError::TlsConfig {
            item: "trusted certificates",
            reason: format!("{}: {e}", path.display()),
        })?;
    }
    Ok(store)
}

/// Checks that `name` can be verified: a DNS name or an IP address
/// ([`TransportError::TlsConfig`] otherwise).
pub fn check_server_name(name: &str) -> Result<(), TransportError> {
    server_name(name).map(drop)
}

fn server_name(name: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(name.to_owned()).map_err(|e| TransportError::TlsConfig {
        item: "server name",
        reason: format!("{name:?}: {e}"),
    })
}

/// The host part of `host:port` (`[v6]:port` included).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The host's TLS server configuration, ready to wrap accepted connections.
#[derive(Clone)]
pub(crate) struct TlsAcceptor(Arc<ServerConfig>);

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl TlsAcceptor {
    /// Runs the server handshake on an accepted connection by `deadline`. A peer that does
    /// not speak TLS is [`TransportError::TlsHandshake`]; one that says nothing,
    /// [`TransportError::Timeout`].
    pub(crate) fn accept(
        &self,
        stream: TcpStream,
        max_frame: usize,
        deadline: Instant,
    ) -> Result<Halves, TransportError> {
        let conn = rustls::ServerConnection::new(self.0.clone())
            .map_err(|e| TransportError::TlsHandshake(e.to_string()))?;
        establish(Connection::Server(conn), stream, max_frame, deadline)
    }
}

/// The worker's TLS settings: whom to trust, and the name to verify.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Trusts the certificates in the PEM file `ca` (a CA, or a self-signed certificate
    /// itself) and verifies the host's certificate for the host part of the address
    /// connected to, unless [`with_server_name`](Self::with_server_name) says otherwise.
    pub fn from_ca_file(ca: impl AsRef<Path>) -> Result<Self, TransportError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| config_err("protocol versions", e))?
            .with_root_certificates(roots(ca.as_ref())?)
            .with_no_client_auth();
        Ok(TlsConnector {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Verifies the host's certificate for `name` (a DNS name or an IP address).
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TransportError> {
        self.server_name = Some(server_name(name)?);
        Ok(self)
    }

    /// From the worker's environment: `None` unless `FERRY_TLS=1`; then `FERRY_TLS_CA`
    /// (required) and `FERRY_TLS_SERVER_NAME` (optional).
    pub fn from_env() -> Result<Option<Self>, TransportError> {
        let bad = |var, reason: String| TransportError::BadEnvironment { var, reason };
        match std::env::var(FERRY_TLS).as_deref() {
            Err(_) | Ok("" | "0") => return Ok(None),
            Ok("1") => {}
            Ok(other) => return Err(bad(FERRY_TLS, format!("{other:?} is neither 0 nor 1"))),
        }
        let ca = super::handshake::required_env(FERRY_TLS_CA)?;
        let connector = Self::from_ca_file(&ca).map_err(|e| bad(FERRY_TLS_CA, e.to_string()))?;
        match std::env::var(FERRY_TLS_SERVER_NAME) {
            Ok(name) if !name.is_empty() => connector
                .with_server_name(&name)
                .map(Some)
                .map_err(|e| bad(FERRY_TLS_SERVER_NAME, e.to_string())),
            _ => Ok(Some(connector)),
        }
    }

    /// Runs the client handshake on a connected stream, verifying the host by `deadline`.
    pub(crate) fn connect(
        &self,
        address: &str,
        stream: TcpStream,
        max_frame: usize,
        deadline: Instant,
    ) -> Result<Halves, TransportError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(host_of(address)).map_err(|e| TransportError::BadEnvironment {
                var: FERRY_TCP_ADDR,
                reason: format!("no server name to verify the host for: {e}"),
            })?,
        };
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| TransportError::TlsHandshake(e.to_string()))?;
        establish(Connection::Client(conn), stream, max_frame, deadline)
    }
}

/// A TLS session and its socket, shared by a link's two halves.
struct Shared {
    /// Held only for non-blocking work (see the module docs).
    conn: Mutex<Connection>,
    /// Non-blocking.
    sock: TcpStream,
}

/// The receiving half of a TLS link.
pub(crate) struct TlsReader(Arc<Shared>);

/// The sending half of a TLS link; sends `close_notify` and shuts down writing when
/// dropped, so the peer reads end of stream.
pub(crate) struct TlsWriter(Arc<Shared>);

/// A TLS link's two halves before they are boxed into a [`Link`].
pub(crate) type Halves = (FramedReceiver<TlsReader>, FramedSender<TlsWriter>);

/// Joins the halves into a link.
pub(crate) fn into_link(halves: Halves) -> Link {
    framed::link(halves.0, halves.1)
}

#[derive(Clone, Copy)]
enum Interest {
    Read,
    Write,
}

/// Waits until the socket is ready for `interest` or `timeout` (`None`: forever) passes;
/// `Ok(false)` on timeout.
#[cfg(unix)]
fn wait(sock: &TcpStream, interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let flags = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let timeout = timeout.map(|t| Timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let mut fds = [PollFd::new(sock, flags)];
    loop {
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Without `poll`, a short sleep (as the portable accept loop does); the caller retries.
#[cfg(not(unix))]
fn wait(_sock: &TcpStream, _interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
    let step = Duration::from_millis(1);
    std::thread::sleep(timeout.map_or(step, |t| t.min(step)));
    Ok(true)
}

/// Waits for `interest` until `deadline`; [`TransportError::Timeout`] once it has passed.
fn wait_until(
    sock: &TcpStream,
    interest: Interest,
    deadline: Option<Instant>,
) -> Result<(), TransportError> {
    let left = remaining(deadline);
    if left.is_some_and(|l| l.is_zero()) {
        return Err(TransportError::Timeout);
    }
    match wait(sock, interest, left) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransportError::Timeout),
        Err(e) => Err(TransportError::from_io(e)),
    }
}

/// Pushes queued TLS records to the socket until none are left (`Ok(true)`) or the socket
/// takes no more now (`Ok(false)`). Never blocks.
fn push(conn: &mut Connection, mut sock: &TcpStream) -> Result<bool, TransportError> {
    while conn.wants_write() {
        match conn.write_tls(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::from_io(e)),
        }
    }
    Ok(true)
}

/// What reading the socket into the session gave.
enum Pulled {
    /// Records (or end of stream) were taken in and processed.
    Some,
    /// The socket has nothing now.
    Nothing,
    /// The peer closed the connection (what came before it is processed).
    Eof,
}

/// Reads what the socket has into the session and processes it. Never blocks.
fn pull(conn: &mut Connection, mut sock: &TcpStream) -> Result<Pulled, io::Error> {
    let eof = loop {
        match conn.read_tls(&mut sock) {
            Ok(n) => break n == 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pulled::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let processed = conn.process_new_packets();
    // An answer the session owes (an alert, a key update): best effort now, the writer
    // pushes whatever is left with its next frame.
    let _ = push(conn, sock);
    processed.map(drop).map_err(io::Error::other)?;
    Ok(if eof { Pulled::Eof } else { Pulled::Some })
}

/// Runs the TLS handshake on a non-blocking socket by `deadline`, then splits the session
/// into a link's halves.
fn establish(
    mut conn: Connection,
    stream: TcpStream,
    max_frame: usize,
    deadline: Instant,
) -> Result<Halves, TransportError> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let failed = |e: io::Error| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::Other => {
            TransportError::TlsHandshake(e.to_string())
        }
        _ => TransportError::from_io(e),
    };
    while conn.is_handshaking() {
        if !push(&mut conn, &stream)? {
            wait_until(&stream, Interest::Write, Some(deadline))?;
            continue;
        }
        if conn.wants_read() {
            match pull(&mut conn, &stream).map_err(failed)? {
                Pulled::Some => {}
                Pulled::Nothing => wait_until(&stream, Interest::Read, Some(deadline))?,
                Pulled::Eof if conn.is_handshaking() => {
                    return Err(TransportError::TlsHandshake(
                        "the peer closed the connection during the TLS handshake".into(),
                    ))
                }
                Pulled::Eof => {}
            }
        }
    }
    while !push(&mut conn, &stream)? {
        wait_until(&stream, Interest::Write, Some(deadline))?;
    }
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        sock: stream,
    });
    Ok((
        FramedReceiver::new(TlsReader(shared.clone()), max_frame),
        FramedSender::new(TlsWriter(shared), max_frame),
    ))
}

impl WireRead for TlsReader {
    fn read(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<usize, TransportError> {
        let shared = &*self.0;
        loop {
            {
                let mut conn = shared.conn.lock();
                match conn.reader().read(dst) {
                    // 0: the peer's close_notify, end of stream.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(TransportError::from_io(e)),
                }
                match pull(&mut conn, &shared.sock) {
                    // After end of stream the plaintext read above reports it.
                    Ok(Pulled::Some | Pulled::Eof) => continue,
                    Ok(Pulled::Nothing) => {}
                    Err(e) => return Err(TransportError::from_io(e)),
                }
            }
            wait_until(&shared.sock, Interest::Read, deadline)?;
        }
    }
}

impl WireWrite for TlsWriter {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError> {
        let shared = &*self.0;
        let written = loop {
            let mut conn = shared.conn.lock();
            let n = conn
                .writer()
                .write_vectored(bufs)
                .map_err(TransportError::from_io)?;
            // 0: the session's send buffer is full; drain it to the socket first.
            let drained = push(&mut conn, &shared.sock)?;
            if n > 0 {
                break n;
            }
            drop(conn);
            if !drained {
                wait_until(&shared.sock, Interest::Write, None)?;
            }
        };
        // Every byte accepted goes out before the call returns: a frame must not sit in
        // the session's buffer with nobody left to push it.
        loop {
            if push(&mut shared.conn.lock(), &shared.sock)? {
                return Ok(written);
            }
            wait_until(&shared.sock, Interest::Write, None)?;
        }
    }
}

impl Drop for TlsWriter {
    fn drop(&mut self) {
        let shared = &*self.0;
        let mut conn = shared.conn.lock();
        conn.send_close_notify();
        // Best effort: a peer that is gone or not reading gets the bare shutdown.
        let _ = push(&mut conn, &shared.sock);
        let _ = shared.sock.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("gpu-box.lan:7000"), "gpu-box.lan");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn missing_and_non_pem_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key) in [(&missing, &junk), (&junk, &junk)] {
            let err = TlsOptions::new(cert, key).check().unwrap_err();
            assert!(matches!(err, TransportError::TlsConfig { .. }), "{err:?}");
        }
        let err = TlsConnector::from_ca_file(&junk).unwrap_err();
        assert!(matches!(err, TransportError::TlsConfig { .. }), "{err:?}");
    }

    #[test]
    fn plaintext_hello_fails_the_server_handshake_with_its_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        let acceptor = TlsOptions::new(&cert, &key).acceptor().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // What a plaintext ferry worker sends first: a framed `FRY1` hello.
        client.write_all(&[9, 0, 0, 0]).unwrap();
        client.write_all(b"FRY1token").unwrap();
        let (stream, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = acceptor.accept(stream, 1024, deadline).err().unwrap();
        assert!(matches!(err, TransportError::TlsHandshake(_)), "{err:?}");
    }
}
