//! Wiring a transport into a worker process: the host prepares it before the spawn and
//! completes it after; the worker finds its end from the environment.
//!
//! Each transport supplies one [`PendingLink`] (host side) and one arm of
//! [`worker_link`] (worker side). `WorkerProcess::spawn` drives the host side:
//! `prepare` → [`PendingLink::configure`] on the command → spawn →
//! [`PendingLink::connect`] with the child.

use super::{local_socket, shm, stdio, tcp, Link, Token, TransportError, TransportKind};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Host-side settings of a transport beyond its kind, from the worker's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportOptions {
    /// `socket`: where the socket lives.
    pub local_socket: local_socket::SocketOptions,
    /// `tcp`: where the host listens and what the worker is told.
    pub tcp: tcp::TcpOptions,
    /// `socket`, `tcp`: the token the worker must offer (default: a fresh random one per
    /// worker, passed in `FERRY_TOKEN`).
    pub token: Option<Token>,
    /// Settings of the `shm` transport.
    pub shm: shm::ShmOptions,
}

/// A transport the host has prepared for a child that is about to be spawned.
pub trait PendingLink: Send {
    /// Adjusts the command before the spawn: environment variables (beyond the common
    /// `FERRY_*` ones), stdin/stdout, file descriptors the child inherits.
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError>;

    /// Completes the link with the spawned child by `deadline`. A child that exits first
    /// is [`TransportError::Disconnected`].
    fn connect(
        self: Box<Self>,
        child: &mut Child,
        deadline: Instant,
    ) -> Result<Link, TransportError>;
}

/// Prepares the host side of `kind` for one worker.
pub fn prepare(
    kind: TransportKind,
    options: &TransportOptions,
    max_frame: usize,
) -> Result<Box<dyn PendingLink>, TransportError> {
    let token = || options.token.clone().map_or_else(Token::random, Ok);
    match kind {
        TransportKind::Stdio => Ok(Box::new(StdioPending { max_frame })),
        TransportKind::LocalSocket => Ok(Box::new(local_socket::SocketListener::bind(
            &options.local_socket,
            token()?,
            max_frame,
        )?)),
        TransportKind::Tcp => Ok(Box::new(tcp::TcpListener::bind(
            &options.tcp,
            token()?,
            max_frame,
        )?)),
        TransportKind::Shm => shm::prepare(&options.shm, max_frame),
    }
}

/// The worker's end of the transport the host chose, from its environment. For stdio
/// this also takes the protocol off fds 0 and 1 (see [`stdio::worker_link`]).
pub fn worker_link(transport: TransportKind, max_frame: usize) -> Result<Link, TransportError> {
    match transport {
        TransportKind::Stdio => stdio::worker_link(max_frame),
        TransportKind::LocalSocket => local_socket::worker_link(max_frame),
        TransportKind::Tcp => tcp::worker_link(max_frame),
        TransportKind::Shm => shm::worker_link(max_frame),
    }
}

struct StdioPending {
    max_frame: usize,
}

impl PendingLink for StdioPending {
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        Ok(())
    }

    fn connect(
        self: Box<Self>,
        child: &mut Child,
        _deadline: Instant,
    ) -> Result<Link, TransportError> {
        match (child.stdout.take(), child.stdin.take()) {
            (Some(out), Some(inp)) => Ok(stdio::host_link(out, inp, self.max_frame)),
            _ => Err(TransportError::Internal("child stdio pipes missing".into())),
        }
    }
}
