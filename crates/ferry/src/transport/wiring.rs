//! Wiring a transport into a worker process: the host prepares it before the spawn and
//! completes it after; the worker finds its end from the environment.
//!
//! A [`Transport`] (host side) prepares one [`PendingLink`] per worker; the built-in
//! transports are [`TransportKind`]'s implementation, and a crate outside ferry implements
//! the trait for its own (see `docs/transports.md`, "Writing your own transport").
//! `WorkerProcess::spawn` drives every transport the same way:
//! [`Transport::prepare`] → [`PendingLink::configure`] on the command → spawn →
//! [`PendingLink::connect`] with the child. On the worker side each built-in transport has
//! one arm of [`worker_link`]; a custom transport's worker builds its [`Link`] itself and
//! hands it to `ferry::worker::serve_link`.

use super::{local_socket, shm, stdio, tcp, Framing, Link, Token, TransportError, TransportKind};
use std::fmt;
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

/// A transport the host has prepared for a child that is about to be spawned (made by
/// [`Transport::prepare`]).
pub trait PendingLink: Send {
    /// Adjusts the command before the spawn: environment variables (beyond the common
    /// `FERRY_*` ones), stdin/stdout, file descriptors the child inherits (see
    /// [`inherit`](super::inherit)).
    ///
    /// The command arrives with its program, arguments, the spec's environment and the
    /// `FERRY_*` variables set, stdin null, and stdout and stderr piped (both are logged by
    /// the host unless the transport takes stdout over). The host drops the command right
    /// after the spawn, so anything it holds for the child (a descriptor passed with
    /// [`inherit::pass`](super::inherit::pass)) is closed in the host then.
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError>;

    /// Completes the link with the spawned child by `deadline`. A child that exits first
    /// is [`TransportError::Disconnected`]; `deadline` passing is
    /// [`TransportError::Timeout`] (the host reports them as the worker exiting before
    /// `ready` and as a startup timeout, and kills the child). The link may be returned
    /// before the child has opened its end, as long as a child that never does shows up
    /// as `Disconnected` or `Timeout` on the `ready` wait that follows.
    fn connect(
        self: Box<Self>,
        child: &mut Child,
        deadline: Instant,
    ) -> Result<Link, TransportError>;
}

/// The host side of a transport: how to reach one worker process.
///
/// One value describes the transport with its own settings; [`prepare`](Self::prepare)
/// is called once per worker spawned (by `WorkerProcess::spawn`, and so by every worker a
/// `Pool` starts, from several threads), and the [`PendingLink`] it returns wires that one
/// child. The built-in transports are [`TransportKind`]'s implementation; hand a custom one
/// to a worker with `WorkerSpec::custom_transport`.
///
/// The links it makes must keep the contract of [the module](super) (check them with the
/// conformance suite: `ferry::transport::conformance`, cargo feature `conformance`).
///
/// # Example
///
/// A transport over the child's stdin and stdout (what the built-in `stdio` does):
///
/// ```
/// use ferry::transport::{
///     stdio, Framing, Link, PendingLink, Transport, TransportError, TransportOptions,
/// };
/// use ferry::worker::WorkerSpec;
/// use std::process::{Child, Command, Stdio};
/// use std::time::Instant;
///
/// #[derive(Debug)]
/// struct Pipes;
///
/// struct PendingPipes {
///     max_frame: usize,
/// }
///
/// impl Transport for Pipes {
///     fn name(&self) -> &str {
///         "my_pipes"
///     }
///     fn framing(&self) -> Framing {
///         Framing::Lines
///     }
///     fn prepare(
///         &self,
///         _options: &TransportOptions,
///         max_frame: usize,
///     ) -> Result<Box<dyn PendingLink>, TransportError> {
///         Ok(Box::new(PendingPipes { max_frame }))
///     }
/// }
///
/// impl PendingLink for PendingPipes {
///     fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
///         cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
///         Ok(())
///     }
///     fn connect(
///         self: Box<Self>,
///         child: &mut Child,
///         _deadline: Instant,
///     ) -> Result<Link, TransportError> {
///         match (child.stdout.take(), child.stdin.take()) {
///             (Some(out), Some(inp)) => Ok(stdio::host_link(out, inp, self.max_frame)),
///             _ => Err(TransportError::Internal("child pipes missing".into())),
///         }
///     }
/// }
///
/// let spec = WorkerSpec::new("echo", "my-echo-worker", ["--serve"]).custom_transport(Pipes);
/// assert_eq!(spec.effective_transport().name(), "my_pipes");
/// ```
pub trait Transport: Send + Sync + fmt::Debug {
    /// The transport's name: what the worker finds in `FERRY_TRANSPORT`, and what status
    /// pages show. A custom transport's name must be made of ASCII letters, digits, `_`
    /// and `-`, and must not be a built-in one (`stdio`, `socket`, `tcp`, `shm`), so a
    /// worker never mistakes it for one it knows.
    fn name(&self) -> &str;

    /// How its links delimit frames; decides which codecs fit (checked before the spawn).
    /// The links it makes must report the same.
    fn framing(&self) -> Framing;

    /// Prepares the host side for one worker about to be spawned: whatever must exist
    /// before the child does (a listener, a segment, a pipe pair). `options` are the
    /// worker spec's transport options (a custom transport may use `token`, or keep its
    /// own settings in `self`); `max_frame` is the largest frame either direction must
    /// accept, and the links made must refuse larger ones.
    fn prepare(
        &self,
        options: &TransportOptions,
        max_frame: usize,
    ) -> Result<Box<dyn PendingLink>, TransportError>;
}

/// The built-in transports.
impl Transport for TransportKind {
    fn name(&self) -> &str {
        self.as_str()
    }

    fn framing(&self) -> Framing {
        TransportKind::framing(*self)
    }

    fn prepare(
        &self,
        options: &TransportOptions,
        max_frame: usize,
    ) -> Result<Box<dyn PendingLink>, TransportError> {
        let token = || options.token.clone().map_or_else(Token::random, Ok);
        match self {
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
}

/// Prepares the host side of `kind` for one worker (the same as
/// [`Transport::prepare`] on `kind`).
pub fn prepare(
    kind: TransportKind,
    options: &TransportOptions,
    max_frame: usize,
) -> Result<Box<dyn PendingLink>, TransportError> {
    Transport::prepare(&kind, options, max_frame)
}

/// Checks a custom transport's name as [`Transport::name`] requires: not a built-in
/// name, nor one that could not travel in `FERRY_TRANSPORT`.
pub(crate) fn check_custom_name(name: &str) -> Result<(), TransportError> {
    let invalid = |reason: String| TransportError::InvalidOption {
        option: "transport",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("a custom transport's name cannot be empty".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(invalid(format!(
            "custom transport name {name:?} has {c:?} (allowed: ASCII letters, digits, `_`, `-`)"
        )));
    }
    if name.parse::<TransportKind>().is_ok() {
        return Err(invalid(format!(
            "custom transport name {name:?} is a built-in transport's"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_kinds_are_transports() {
        for kind in TransportKind::ALL {
            let transport: &dyn Transport = &kind;
            assert_eq!(transport.name(), kind.as_str());
            assert_eq!(transport.framing(), kind.framing());
        }
    }

    #[test]
    fn custom_names_are_checked() {
        for ok in ["pipes", "my_transport-2", "Q"] {
            assert!(check_custom_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "stdio",
            "socket",
            "local_socket",
            "tcp",
            "shm",
            "a b",
            "a=b",
            "é",
        ] {
            assert!(
                matches!(
                    check_custom_name(bad),
                    Err(TransportError::InvalidOption {
                        option: "transport",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
