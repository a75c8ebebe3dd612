//! tcp transport: the same length-prefixed frames as `local_socket`, over TCP with
//! `TCP_NODELAY`, for workers on another host.
//!
//! The host listens ([`TcpOptions::listen`], default `127.0.0.1:0`: a free loopback port) and
//! tells the worker where to connect in `FERRY_TCP_ADDR` ([`TcpOptions::advertise`], default
//! the listening address, with an unspecified IP replaced by loopback) and the token in
//! `FERRY_TOKEN`. Two ways to run a worker:
//!
//! - **spawned by the host** (the default): the host starts the worker with those variables;
//!   a fresh random token is generated per worker unless one is configured.
//! - **started elsewhere**: configure `listen` (e.g. `0.0.0.0:7000`), `advertise` and a
//!   token; the worker is started on its machine with `FERRY_TRANSPORT=tcp`,
//!   `FERRY_TCP_ADDR` and `FERRY_TOKEN` (the spawned command can be the launcher, e.g.
//!   `ssh gpu-box ...`), or embedders use [`TcpListener`] and [`connect`] directly.
//!
//! Either way the host accepts connections until one offers the token (see
//! `docs/transports.md`), by the startup deadline, and drops strangers.
//!
//! With [`TcpOptions::tls`] set, every connection is TLS ([`super::tls`]): the host
//! runs the TLS handshake first (a client that does not speak TLS is dropped like a
//! stranger), and the token handshake and the frames go inside it. A spawned worker is told
//! `FERRY_TLS=1` and what to trust; [`worker_link`] reads them.

use super::handshake::{self, Accept, Token};
use super::tls::{self, TlsAcceptor, TlsConnector, TlsOptions};
use super::{Link, PendingLink, TransportError};
use crate::protocol::env::{
    FERRY_TCP_ADDR, FERRY_TLS, FERRY_TLS_CA, FERRY_TLS_SERVER_NAME, FERRY_TOKEN,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[cfg(not(unix))]
use super::wire_portable as wire;
#[cfg(unix)]
use super::wire_unix as wire;

/// How long a worker tries to connect to each address of its host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Host-side settings of the tcp transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpOptions {
    /// The address the host listens on (default `127.0.0.1:0`, any free port).
    pub listen: Option<SocketAddr>,
    /// The address the worker is told to connect to, `host:port` (default: the listening
    /// address, loopback if it is unspecified).
    pub advertise: Option<String>,
    /// TLS around every connection (default: none, plain TCP).
    pub tls: Option<TlsOptions>,
}

/// The host's listening TCP socket for one worker, before the worker connects.
#[derive(Debug)]
pub struct TcpListener {
    listener: std::net::TcpListener,
    address: String,
    token: Token,
    max_frame: usize,
    /// With TLS: the server configuration, and what a spawned worker is told.
    tls: Option<(TlsAcceptor, Vec<(&'static str, String)>)>,
}

impl TcpListener {
    /// Listens for one worker, admitting the connection that offers `token`. With
    /// [`TcpOptions::tls`], the certificate and key files are read here
    /// ([`TransportError::TlsConfig`] when they cannot be used).
    pub fn bind(
        options: &TcpOptions,
        token: Token,
        max_frame: usize,
    ) -> Result<Self, TransportError> {
        let tls = match &options.tls {
            Some(t) => Some((t.acceptor()?, t.worker_env()?)),
            None => None,
        };
        let listen = options
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let address = match &options.advertise {
            Some(a) => a.clone(),
            None => {
                let mut local = listener.local_addr()?;
                if local.ip().is_unspecified() {
                    local.set_ip(match local.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    });
                }
                local.to_string()
            }
        };
        Ok(TcpListener {
            listener,
            address,
            token,
            max_frame,
            tls,
        })
    }

    /// The address a worker connects to (the value of `FERRY_TCP_ADDR`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.listener.local_addr()?)
    }

    /// The token a worker must offer.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Accepts the worker by `deadline`: the first connection that offers the token. A
    /// `child` that exits first gives [`TransportError::Disconnected`].
    pub fn accept(
        mut self,
        child: Option<&mut Child>,
        deadline: Instant,
    ) -> Result<Link, TransportError> {
        let token = self.token.clone();
        let max_frame = self.max_frame;
        if let Some((acceptor, _)) = self.tls.clone() {
            return handshake::accept_worker(&mut self, child, deadline, |stream, by| {
                let mut halves = acceptor.accept(stream, max_frame, by)?;
                let admitted =
                    handshake::check(&mut halves.0, &mut halves.1, &token, max_frame, by)?;
                Ok(admitted.then(|| tls::into_link(halves)))
            });
        }
        handshake::accept_worker(&mut self, child, deadline, |stream, by| {
            let mut halves = halves(stream, max_frame)?;
            let admitted = handshake::check(&mut halves.0, &mut halves.1, &token, max_frame, by)?;
            Ok(admitted.then(|| wire::into_link(halves)))
        })
    }
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    fn try_accept(&mut self) -> Result<Option<TcpStream>, TransportError> {
        match self.listener.accept() {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "tcp connection");
                Ok(Some(stream))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    #[cfg(unix)]
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        wire::wait_readable(&self.listener, timeout).map(drop)
    }

    #[cfg(not(unix))]
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(())
    }
}

#[cfg(unix)]
fn halves(stream: TcpStream, max_frame: usize) -> Result<wire::Halves, TransportError> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    wire::halves(stream.into(), max_frame)
}

#[cfg(not(unix))]
fn halves(stream: TcpStream, max_frame: usize) -> Result<wire::Halves<TcpStream>, TransportError> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let reader = stream.try_clone()?;
    wire::halves(reader, stream, max_frame)
}

/// Worker side: connects to the host at `address` (`host:port`, every resolved address
/// tried in turn) and offers `token`.
///
/// ```no_run
/// use ferry::transport::{tcp, Token};
/// let token = Token::new(std::env::var("FERRY_TOKEN")?)?;
/// let link = tcp::connect(&std::env::var("FERRY_TCP_ADDR")?, &token, 1 << 20)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(address: &str, token: &Token, max_frame: usize) -> Result<Link, TransportError> {
    let stream = connect_stream(address)?;
    let mut halves = halves(stream, max_frame)?;
    handshake::offer(&mut halves.0, &mut halves.1, token)?;
    Ok(wire::into_link(halves))
}

/// Worker side with TLS: connects to the host at `address`, verifies its certificate as
/// `tls` says ([`TransportError::TlsHandshake`] when it does not pass), then offers `token`
/// inside TLS.
///
/// ```no_run
/// use ferry::transport::{tcp, tls::TlsConnector, Token};
/// let tls = TlsConnector::from_ca_file("ca.pem")?;
/// let token = Token::new(std::env::var("FERRY_TOKEN")?)?;
/// let link = tcp::connect_tls(&std::env::var("FERRY_TCP_ADDR")?, &token, &tls, 1 << 20)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect_tls(
    address: &str,
    token: &Token,
    tls: &TlsConnector,
    max_frame: usize,
) -> Result<Link, TransportError> {
    let stream = connect_stream(address)?;
    let deadline = Instant::now() + handshake::VERDICT_TIMEOUT;
    let mut halves = tls.connect(address, stream, max_frame, deadline)?;
    handshake::offer(&mut halves.0, &mut halves.1, token)?;
    Ok(tls::into_link(halves))
}

/// The first address of `address` that takes the connection.
fn connect_stream(address: &str) -> Result<TcpStream, TransportError> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(TransportError::Io(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        )
    })))
}

impl PendingLink for TcpListener {
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
        cmd.env(FERRY_TCP_ADDR, &self.address)
            .env(FERRY_TOKEN, self.token.as_str());
        // Never a TLS setting the host itself inherited.
        for var in [FERRY_TLS, FERRY_TLS_CA, FERRY_TLS_SERVER_NAME] {
            cmd.env_remove(var);
        }
        if let Some((_, env)) = &self.tls {
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        Ok(())
    }

    fn connect(
        self: Box<Self>,
        child: &mut Child,
        deadline: Instant,
    ) -> Result<Link, TransportError> {
        self.accept(Some(child), deadline)
    }
}

/// The worker's end, from `FERRY_TCP_ADDR` and `FERRY_TOKEN`, with TLS when `FERRY_TLS=1`
/// (see [`TlsConnector::from_env`]).
pub fn worker_link(max_frame: usize) -> Result<Link, TransportError> {
    let address = handshake::required_env(FERRY_TCP_ADDR)?;
    let token = handshake::token_from_env()?;
    match TlsConnector::from_env()? {
        Some(tls) => connect_tls(&address, &token, &tls, max_frame),
        None => connect(&address, &token, max_frame),
    }
}

/// Two connected links (host end, worker end) over loopback TCP in this process, with the
/// handshake done; for tests and for running the conformance suite.
pub fn pair(max_frame: usize) -> Result<(Link, Link), TransportError> {
    let listener = TcpListener::bind(&TcpOptions::default(), Token::random()?, max_frame)?;
    let address = listener.address().to_owned();
    let token = listener.token().clone();
    let worker = std::thread::spawn(move || connect(&address, &token, max_frame));
    let host = listener.accept(None, Instant::now() + Duration::from_secs(20));
    let worker = worker
        .join()
        .map_err(|_| TransportError::Internal("connecting thread panicked".into()))?;
    Ok((host?, worker?))
}

/// Two connected links (host end, worker end) over loopback TCP with TLS in this process:
/// the host presents `options`' certificate, the worker trusts `worker`. For tests and the
/// conformance suite.
pub fn tls_pair(
    options: &TlsOptions,
    worker: &TlsConnector,
    max_frame: usize,
) -> Result<(Link, Link), TransportError> {
    let tcp = TcpOptions {
        tls: Some(options.clone()),
        ..TcpOptions::default()
    };
    let listener = TcpListener::bind(&tcp, Token::random()?, max_frame)?;
    let address = listener.address().to_owned();
    let token = listener.token().clone();
    let worker = worker.clone();
    let worker = std::thread::spawn(move || connect_tls(&address, &token, &worker, max_frame));
    let host = listener.accept(None, Instant::now() + Duration::from_secs(20));
    let worker = worker
        .join()
        .map_err(|_| TransportError::Internal("connecting thread panicked".into()))?;
    Ok((host?, worker?))
}
