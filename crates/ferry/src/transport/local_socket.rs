//! local_socket transport: length-prefixed frames over a Unix domain socket (a named pipe
//! on Windows), through the `interprocess` crate.
//!
//! The host creates the listener before spawning the worker and passes its name in
//! `FERRY_SOCKET`, with a token in `FERRY_TOKEN` (see [`Token`]). The worker
//! connects and offers the token; the host accepts connections until one offers it, by the
//! startup deadline, and drops strangers.
//!
//! **Where the socket lives.** By default in a fresh private directory (mode 0700) named
//! `ferry-<host pid>-<random>` under [`SocketOptions::dir`], else `$XDG_RUNTIME_DIR`, else
//! the temp dir. The directory is removed as soon as the worker is accepted (the connection
//! does not need the name any more), and on every failure path, so a running host has no
//! socket files at all. A host killed (SIGKILL) while waiting for its worker leaves its
//! directory behind; the next host that prepares a socket in the same place removes every
//! `ferry-<pid>-*` directory of the same user whose pid is not alive. Names are random, so a
//! stale path never blocks a new start either way.
//!
//! With [`SocketOptions::abstract_namespace`] on Linux the name is in the abstract namespace
//! (`@ferry-<pid>-<random>` in `FERRY_SOCKET`): nothing is ever on disk, and the kernel frees
//! the name when the listener closes, however the host dies. Abstract names have no file
//! permissions; the token is what keeps other local users out. On Windows names are always
//! pipe names (`\\.\pipe\ferry-...`).

use super::handshake::{self, Accept, Token};
use super::private_dir::{self, PrivateDir};
use super::{Link, PendingLink, TransportError};
use crate::protocol::env::{FERRY_SOCKET, FERRY_TOKEN};
use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{
    ConnectOptions, GenericFilePath, GenericNamespaced, Listener, ListenerNonblockingMode,
    ListenerOptions, Name, Stream,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[cfg(not(unix))]
use super::wire_portable as wire;
#[cfg(unix)]
use super::wire_unix as wire;

/// Prefix of the private directories and abstract names this transport creates.
const PREFIX: &str = "ferry-";
/// The socket's file name inside its private directory.
const SOCKET_FILE: &str = "s";

/// Host-side settings of the local socket transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// Where private socket directories are created (default: `$XDG_RUNTIME_DIR`, else the
    /// temp dir). Created if missing.
    pub dir: Option<PathBuf>,
    /// Use the Linux abstract namespace instead of a directory (ignored elsewhere: Windows
    /// always uses pipe names, other Unixes always a directory).
    pub abstract_namespace: bool,
}

/// The host's listening socket for one worker, before the worker connects.
#[derive(Debug)]
pub struct SocketListener {
    listener: Listener,
    name: String,
    token: Token,
    max_frame: usize,
    /// Dropped (directory removed) after the accept, or with the listener.
    dir: Option<PrivateDir>,
}

/// Where private directories go when not configured.
fn default_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Removes the private socket directories in `base` left by hosts of this user that died
/// without cleaning up (SIGKILL while waiting for a worker). Best effort: errors are logged.
#[cfg(unix)]
pub fn remove_stale_dirs(base: &Path) {
    private_dir::remove_stale(base, PREFIX);
}

/// A local socket name from its `FERRY_SOCKET` form: `@name` is namespaced (Linux abstract
/// namespace, Windows pipe name), anything else a filesystem path.
fn to_name(text: &str) -> Result<Name<'_>, TransportError> {
    let name = match text.strip_prefix('@') {
        Some(ns) => ns.to_ns_name::<GenericNamespaced>(),
        None => text.to_fs_name::<GenericFilePath>(),
    };
    name.map_err(|e| TransportError::InvalidOption {
        option: "socket name",
        reason: format!("{text:?}: {e}"),
    })
}

impl SocketListener {
    /// Creates a listener for one worker, admitting the connection that offers `token`.
    pub fn bind(
        options: &SocketOptions,
        token: Token,
        max_frame: usize,
    ) -> Result<Self, TransportError> {
        let use_namespace =
            cfg!(windows) || (cfg!(target_os = "linux") && options.abstract_namespace);
        let (name, dir) = if use_namespace {
            (format!("@{}", private_dir::unique_name(PREFIX)?), None)
        } else {
            let base = options.dir.clone().unwrap_or_else(default_base);
            #[cfg(unix)]
            remove_stale_dirs(&base);
            let dir = PrivateDir::create(&base, PREFIX)?;
            let path = dir.path().join(SOCKET_FILE);
            let text =
                path.to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| TransportError::InvalidOption {
                        option: "socket_dir",
                        reason: format!("socket path {path:?} is not UTF-8"),
                    })?;
            (text, Some(dir))
        };
        let listener = ListenerOptions::new()
            .name(to_name(&name)?)
            .nonblocking(ListenerNonblockingMode::Accept)
            // The private directory goes as a whole; nothing to reclaim one by one.
            .reclaim_name(false)
            .create_sync()?;
        Ok(SocketListener {
            listener,
            name,
            token,
            max_frame,
            dir,
        })
    }

    /// The name a worker connects to (the value of `FERRY_SOCKET`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private directory holding the socket (`None` for a namespaced name).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// The token a worker must offer.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Accepts the worker by `deadline`: the first connection that offers the token. The
    /// name (and its directory) is removed once accepted, and on failure. A `child` that
    /// exits first gives [`TransportError::Disconnected`].
    pub fn accept(
        mut self,
        child: Option<&mut Child>,
        deadline: Instant,
    ) -> Result<Link, TransportError> {
        let token = self.token.clone();
        let max_frame = self.max_frame;
        let link = handshake::accept_worker(&mut self, child, deadline, |stream, by| {
            let mut halves = halves(stream, max_frame)?;
            let admitted = handshake::check(&mut halves.0, &mut halves.1, &token, max_frame, by)?;
            Ok(admitted.then(|| wire::into_link(halves)))
        });
        drop(self.dir.take());
        link
    }
}

impl Accept for SocketListener {
    type Conn = Stream;

    fn try_accept(&mut self) -> Result<Option<Stream>, TransportError> {
        match self.listener.accept() {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    #[cfg(unix)]
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        let Listener::UdSocket(inner) = &self.listener;
        wire::wait_readable(inner, timeout).map(drop)
    }

    #[cfg(not(unix))]
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(())
    }
}

#[cfg(unix)]
fn halves(stream: Stream, max_frame: usize) -> Result<wire::Halves, TransportError> {
    let Stream::UdSocket(inner) = stream;
    let fd = std::os::fd::OwnedFd::from(inner);
    rustix::io::ioctl_fionbio(&fd, false).map_err(|e| TransportError::Io(e.into()))?;
    wire::halves(fd, max_frame)
}

#[cfg(not(unix))]
fn halves(stream: Stream, max_frame: usize) -> Result<wire::Halves<Stream>, TransportError> {
    use interprocess::TryClone;
    stream.set_nonblocking(false)?;
    let reader = stream.try_clone()?;
    wire::halves(reader, stream, max_frame)
}

/// Worker side: connects to the host's socket `name` (the `FERRY_SOCKET` form) and offers
/// `token`.
///
/// ```no_run
/// use ferry::transport::{local_socket, Token};
/// let token = Token::new(std::env::var("FERRY_TOKEN")?)?;
/// let link = local_socket::connect(&std::env::var("FERRY_SOCKET")?, &token, 1 << 20)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(name: &str, token: &Token, max_frame: usize) -> Result<Link, TransportError> {
    let stream = ConnectOptions::new().name(to_name(name)?).connect_sync()?;
    let mut halves = halves(stream, max_frame)?;
    handshake::offer(&mut halves.0, &mut halves.1, token)?;
    Ok(wire::into_link(halves))
}

impl PendingLink for SocketListener {
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
        cmd.env(FERRY_SOCKET, &self.name)
            .env(FERRY_TOKEN, self.token.as_str());
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

/// The worker's end, from `FERRY_SOCKET` and `FERRY_TOKEN`.
pub fn worker_link(max_frame: usize) -> Result<Link, TransportError> {
    let name = handshake::required_env(FERRY_SOCKET)?;
    connect(&name, &handshake::token_from_env()?, max_frame)
}

/// Two connected links (host end, worker end) through a real listener in this process, with
/// the handshake done; for tests and for running the conformance suite.
pub fn pair(options: &SocketOptions, max_frame: usize) -> Result<(Link, Link), TransportError> {
    let listener = SocketListener::bind(options, Token::random()?, max_frame)?;
    let name = listener.name().to_owned();
    let token = listener.token().clone();
    // The worker end runs on a thread: its hello and the host's verdict cross.
    let worker = std::thread::spawn(move || connect(&name, &token, max_frame));
    let host = listener.accept(None, Instant::now() + Duration::from_secs(20));
    let worker = worker
        .join()
        .map_err(|_| TransportError::Internal("connecting thread panicked".into()))?;
    Ok((host?, worker?))
}
