//! The transport contract: moving frames between the host and one worker.
//!
//! A transport gives a [`Link`]: a [`FrameSender`] and a [`FrameReceiver`] that may be
//! used from two threads at once. Every implementation (the built-in ones and a third
//! party's [`Transport`]) keeps this contract, and the conformance suite checks it for each
//! (`ferry::transport::conformance`, behind the cargo feature `conformance`; ferry runs it
//! on its own transports in `crates/ferry/tests/conformance.rs`):
//!
//! 1. **Whole frames, in order.** A frame sent is received whole, once, after every frame
//!    sent before it on the same link (FIFO per direction). Frames never merge or split.
//! 2. **Bounded size.** Frames of 1 to `max_frame` bytes pass. Sending a larger one fails
//!    with [`TransportError::FrameTooLarge`] before anything is written, and the link stays
//!    usable. A peer announcing a larger one is refused before any allocation for it.
//! 3. **Peer death is an error, never a hang.** When the other end is closed or its
//!    process dies, `recv` returns [`TransportError::Disconnected`] (after delivering the
//!    frames already complete) and `send` returns it too, within a bounded time.
//! 4. **Deadlines.** `recv` with a deadline returns [`TransportError::Timeout`] once it
//!    passes with no complete frame; a partial frame is kept for the next call. A deadline
//!    already past polls without blocking.
//! 5. **Text-only links** ([`Framing::Lines`]) refuse a frame containing `\n` with
//!    [`TransportError::InvalidFrame`]; the codec never produces one.
//!
//! The calls block the calling thread: a synchronous caller does its I/O on its own
//! thread with no hop, which is the point of the hot path (see `docs/architecture.md`).

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod fd_io;
mod framed;
mod framing;
mod handshake;
#[cfg(unix)]
pub mod inherit;
pub mod local_socket;
pub mod memory;
pub mod private_dir;
pub mod shm;
pub mod stdio;
pub mod tcp;
pub mod tls;
#[cfg(any(not(unix), test))]
mod wire_portable;
#[cfg(unix)]
mod wire_unix;
mod wiring;

pub use error::TransportError;
pub use framing::Framing;
pub use handshake::Token;
pub(crate) use wiring::check_custom_name;
pub use wiring::{prepare, worker_link, PendingLink, Transport, TransportOptions};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

/// The sending half of a link.
pub trait FrameSender: Send {
    /// Sends one frame: the concatenation of `parts`. Parts let a caller send a header and
    /// large attachments without first copying them together.
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError>;

    /// Switches how frames are delimited from the next [`send`](Self::send) on (stdio:
    /// from lines to length-prefixed frames after `ready`, docs/protocol.md "Binary frames
    /// on stdio"). Switching to the framing already in use does nothing. Transports that
    /// cannot switch need not implement it: the default refuses with
    /// [`TransportError::Unsupported`].
    fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        let _ = framing;
        Err(TransportError::Unsupported(
            "this transport cannot switch framing",
        ))
    }
}

/// The receiving half of a link.
pub trait FrameReceiver: Send {
    /// Receives the next frame into `buf` (its previous contents are discarded), waiting
    /// until `deadline` at most (`None`: until a frame arrives or the peer is gone).
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError>;

    /// Receives the next frame and calls `f` with its bytes, borrowed in place where the
    /// transport can (shm: inside the shared ring, no copy; its space is given back when
    /// `f` returns), else received into `scratch` like [`recv`](Self::recv). Keep `f`
    /// short: on shm the sender cannot reuse that space while it runs.
    ///
    /// ```
    /// use ferry::transport::{memory, FrameReceiver, FrameSender};
    /// let (mut host, mut worker) = memory::pair(1 << 20);
    /// host.sender.send(&[b"ping"])?;
    /// let mut len = 0;
    /// worker.receiver.recv_with(&mut Vec::new(), None, &mut |frame| len = frame.len())?;
    /// assert_eq!(len, 4);
    /// # Ok::<(), ferry::transport::TransportError>(())
    /// ```
    fn recv_with(
        &mut self,
        scratch: &mut Vec<u8>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TransportError> {
        self.recv(scratch, deadline)?;
        f(scratch);
        Ok(())
    }

    /// Whether [`recv_with`](Self::recv_with) lends frames from the transport's own memory
    /// (shm's ring) rather than from `scratch`. A caller that keeps a lent frame long holds
    /// the peer's sends back, so it copies frames it will keep; on a transport that says
    /// `false` there is nothing to gain from `recv_with` over [`recv`](Self::recv).
    fn lends_in_place(&self) -> bool {
        false
    }

    /// Switches how frames are delimited from the next byte not yet part of a received
    /// frame on; bytes already read ahead are kept and read in the new framing. Like
    /// [`FrameSender::switch_framing`], the default refuses with
    /// [`TransportError::Unsupported`].
    fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        let _ = framing;
        Err(TransportError::Unsupported(
            "this transport cannot switch framing",
        ))
    }
}

/// Both halves of one connection, with the properties the layers above need.
pub struct Link {
    /// Sends frames to the peer.
    pub sender: Box<dyn FrameSender>,
    /// Receives frames from the peer.
    pub receiver: Box<dyn FrameReceiver>,
    /// How frames are delimited; decides which codecs fit.
    pub framing: Framing,
    /// The largest frame either direction accepts.
    pub max_frame: usize,
}

impl Link {
    /// Switches both halves to `framing` (see [`FrameSender::switch_framing`]) and records
    /// it in [`framing`](Self::framing). On an error the link may be half switched and
    /// should be dropped.
    pub fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        self.sender.switch_framing(framing)?;
        self.receiver.switch_framing(framing)?;
        self.framing = framing;
        Ok(())
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("framing", &self.framing)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

/// Which transport a worker is reached by, as named in configuration and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportKind {
    /// The worker's stdin and stdout, NDJSON.
    #[default]
    Stdio,
    /// A Unix domain socket (a named pipe on Windows), length-prefixed frames.
    #[serde(rename = "socket", alias = "local_socket")]
    LocalSocket,
    /// TCP with `TCP_NODELAY`, length-prefixed frames; for workers on another host.
    Tcp,
    /// Shared-memory rings in a segment the worker inherits ([`shm`]).
    Shm,
}

impl TransportKind {
    /// Every transport this build has.
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Stdio,
        TransportKind::LocalSocket,
        TransportKind::Tcp,
        TransportKind::Shm,
    ];

    /// The name used in configuration, flags and `FERRY_TRANSPORT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportKind::Stdio => "stdio",
            TransportKind::LocalSocket => "socket",
            TransportKind::Tcp => "tcp",
            TransportKind::Shm => "shm",
        }
    }

    /// The framing this transport imposes.
    pub const fn framing(self) -> Framing {
        match self {
            TransportKind::Stdio => Framing::Lines,
            TransportKind::LocalSocket | TransportKind::Tcp | TransportKind::Shm => {
                Framing::LengthPrefixed
            }
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportKind {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "local_socket" {
            return Ok(TransportKind::LocalSocket);
        }
        TransportKind::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TransportKind::ALL.iter().map(|t| t.as_str()).collect();
                TransportError::UnknownName {
                    what: "transport",
                    name: s.to_owned(),
                    expected: names.join(", "),
                }
            })
    }
}

/// Time left until `deadline`, `None` for no deadline, zero when already past.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// The total length of a frame given as parts, checked against the contract every sender
/// keeps: at least one byte ([`TransportError::InvalidFrame`]) and at most `max_frame`
/// ([`TransportError::FrameTooLarge`]).
pub(crate) fn checked_frame_len(
    parts: &[&[u8]],
    max_frame: usize,
) -> Result<usize, TransportError> {
    let size = parts.iter().map(|p| p.len()).sum();
    if size > max_frame {
        return Err(TransportError::FrameTooLarge {
            size,
            max: max_frame,
        });
    }
    if size == 0 {
        return Err(TransportError::InvalidFrame("empty frame"));
    }
    Ok(size)
}
