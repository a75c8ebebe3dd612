//! A ferry transport defined outside the engine, as a third party would write one:
//! length-prefixed frames over two anonymous pipes that the worker inherits.
//!
//! - **Host side**: [`PipeTransport`] implements [`ferry::transport::Transport`]. For each
//!   worker it makes two pipes, passes the worker's ends to the child with
//!   [`ferry::transport::inherit::pass`] (their numbers in [`FERRY_EXAMPLE_PIPE_IN`] and
//!   [`FERRY_EXAMPLE_PIPE_OUT`]) and keeps the other ends as the host's [`Link`]. Hand it to
//!   a worker with `WorkerSpec::custom_transport(PipeTransport)`; `WorkerProcess::spawn`
//!   and `Pool` do the rest.
//! - **Worker side**: [`worker_link`] takes the inherited ends back
//!   ([`ferry::transport::inherit::take`]); the worker serves the link with
//!   [`ferry::worker::serve_link`] (see `src/bin/ferry-example-worker.rs`).
//! - **Frames**: `u32` little-endian length, then that many bytes (1 to `max_frame`).
//!   A sender copies the prefix and the parts into one buffer and writes it; a receiver
//!   reads the prefix, then the body, keeping what it has read across deadlines.
//!
//! Simple over fast: it exists to show the trait and to be checked by ferry's conformance
//! suite (`tests/conformance.rs`). No `unsafe`: descriptors cross the spawn through ferry's
//! helpers.
//!
//! ```no_run
//! use ferry::worker::{WorkerProcess, WorkerSpec};
//! use ferry_transport_example::PipeTransport;
//!
//! let spec = WorkerSpec::new("echo", "ferry-example-worker", [] as [&str; 0])
//!     .custom_transport(PipeTransport);
//! let mut worker = WorkerProcess::spawn(spec)?;
//! let reply = worker.call("echo", serde_json::json!({"hello": "pipes"}), |_| {})?;
//! assert_eq!(reply.data["hello"], "pipes");
//! worker.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

use ferry::codec::Framing;
use ferry::transport::{
    inherit, FrameReceiver, FrameSender, Link, PendingLink, Transport, TransportError,
    TransportOptions,
};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::time::Instant;

/// The transport's name, in `FERRY_TRANSPORT`.
pub const NAME: &str = "pipes";
/// The worker's environment variable naming the descriptor it reads frames from.
pub const FERRY_EXAMPLE_PIPE_IN: &str = "FERRY_EXAMPLE_PIPE_IN";
/// The worker's environment variable naming the descriptor it writes frames to.
pub const FERRY_EXAMPLE_PIPE_OUT: &str = "FERRY_EXAMPLE_PIPE_OUT";

/// Length-prefixed frames over two anonymous pipes the worker inherits.
///
/// ```
/// use ferry::transport::Transport;
/// use ferry_transport_example::PipeTransport;
/// assert_eq!(PipeTransport.name(), "pipes");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PipeTransport;

impl Transport for PipeTransport {
    fn name(&self) -> &str {
        NAME
    }

    fn framing(&self) -> Framing {
        Framing::LengthPrefixed
    }

    fn prepare(
        &self,
        _options: &TransportOptions,
        max_frame: usize,
    ) -> Result<Box<dyn PendingLink>, TransportError> {
        let (to_worker_read, to_worker_write) = cloexec_pipe()?;
        let (from_worker_read, from_worker_write) = cloexec_pipe()?;
        Ok(Box::new(PendingPipes {
            host: Some(link_from_fds(from_worker_read, to_worker_write, max_frame)),
            worker: Some((to_worker_read, from_worker_write)),
        }))
    }
}

/// The host's side of one worker's pipes, between `prepare` and `connect`.
struct PendingPipes {
    host: Option<Link>,
    /// The worker's ends (it reads the first, writes the second), until handed to the
    /// command.
    worker: Option<(OwnedFd, OwnedFd)>,
}

impl PendingLink for PendingPipes {
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
        let (read, write) = self
            .worker
            .take()
            .ok_or_else(|| TransportError::Internal("pipes already handed to a child".into()))?;
        // The command holds the worker's ends until the host drops it after the spawn:
        // from then on the child's copies are the only ones, so its exit is end of file.
        inherit::pass(cmd, FERRY_EXAMPLE_PIPE_IN, read)?;
        inherit::pass(cmd, FERRY_EXAMPLE_PIPE_OUT, write)?;
        Ok(())
    }

    fn connect(
        mut self: Box<Self>,
        _child: &mut Child,
        _deadline: Instant,
    ) -> Result<Link, TransportError> {
        // Nothing to wait for: the pipes exist, and a child that dies before `ready` is end
        // of file on the host's read end.
        self.host
            .take()
            .ok_or_else(|| TransportError::Internal("pipes already connected".into()))
    }
}

/// The worker's end: the pipes the host passed (call once per process).
pub fn worker_link(max_frame: usize) -> Result<Link, TransportError> {
    let read = inherit::take(FERRY_EXAMPLE_PIPE_IN)?;
    let write = inherit::take(FERRY_EXAMPLE_PIPE_OUT)?;
    Ok(link_from_fds(read, write, max_frame))
}

/// Two connected links over pipes in this process (host end, worker end): what the
/// conformance suite checks.
///
/// ```
/// let (mut host, mut worker) = ferry_transport_example::pipe_pair(1024)?;
/// host.sender.send(&[b"hel", b"lo"])?;
/// let mut buf = Vec::new();
/// worker.receiver.recv(&mut buf, None)?;
/// assert_eq!(buf, b"hello");
/// # Ok::<(), ferry::transport::TransportError>(())
/// ```
pub fn pipe_pair(max_frame: usize) -> Result<(Link, Link), TransportError> {
    let (to_worker_read, to_worker_write) = cloexec_pipe()?;
    let (from_worker_read, from_worker_write) = cloexec_pipe()?;
    Ok((
        link_from_fds(from_worker_read, to_worker_write, max_frame),
        link_from_fds(to_worker_read, from_worker_write, max_frame),
    ))
}

/// A link that reads frames from `read` and writes them to `write`.
pub fn link_from_fds(read: OwnedFd, write: OwnedFd, max_frame: usize) -> Link {
    Link {
        sender: Box::new(PipeSender {
            fd: write,
            max_frame,
            out: Vec::new(),
        }),
        receiver: Box::new(PipeReceiver {
            fd: read,
            max_frame,
            prefix: [0; 4],
            prefix_len: 0,
            body: None,
            frame: Vec::new(),
            filled: 0,
            skip: 0,
        }),
        framing: Framing::LengthPrefixed,
        max_frame,
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), TransportError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)
}

fn io(e: Errno) -> TransportError {
    match e {
        Errno::PIPE | Errno::CONNRESET => TransportError::Disconnected,
        other => TransportError::Io(other.into()),
    }
}

struct PipeSender {
    fd: OwnedFd,
    max_frame: usize,
    /// The frame being written, prefix included (reused).
    out: Vec<u8>,
}

impl FrameSender for PipeSender {
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        // Refused before anything is written (contract clause 2).
        if size > self.max_frame || u32::try_from(size).is_err() {
            return Err(TransportError::FrameTooLarge {
                size,
                max: self.max_frame,
            });
        }
        if size == 0 {
            return Err(TransportError::InvalidFrame("empty frame"));
        }
        self.out.clear();
        self.out.extend_from_slice(&(size as u32).to_le_bytes());
        for part in parts {
            self.out.extend_from_slice(part);
        }
        let mut rest = self.out.as_slice();
        while !rest.is_empty() {
            match rustix::io::write(&self.fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => continue,
                // A closed reader is EPIPE (Rust programs ignore SIGPIPE): Disconnected.
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }
}

struct PipeReceiver {
    fd: OwnedFd,
    max_frame: usize,
    prefix: [u8; 4],
    prefix_len: usize,
    /// The announced length of the frame being read, once its prefix is complete.
    body: Option<usize>,
    /// The frame being read: `len` bytes, of which `filled` have arrived.
    frame: Vec<u8>,
    filled: usize,
    /// Bytes of a refused oversized frame still to be skipped.
    skip: usize,
}

/// Waits until `fd` is readable or `deadline` passes (`None`: reads block).
fn wait(fd: &OwnedFd, deadline: Option<Instant>) -> Result<(), TransportError> {
    let Some(deadline) = deadline else {
        return Ok(());
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Err(TransportError::Timeout),
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(io(e)),
        }
    }
}

/// Reads once into `buf` (waiting until `deadline` at most); end of file, also mid-frame,
/// is `Disconnected` (contract clause 3).
fn read_some(
    fd: &OwnedFd,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, TransportError> {
    wait(fd, deadline)?;
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(io(e)),
        }
    }
}

impl FrameReceiver for PipeReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        // Whatever was read before a `Timeout` stays in `self` (contract clause 4).
        while self.skip > 0 {
            let mut scratch = [0u8; 8192];
            let want = self.skip.min(scratch.len());
            self.skip -= read_some(&self.fd, &mut scratch[..want], deadline)?;
        }
        let len = loop {
            if let Some(len) = self.body {
                break len;
            }
            self.prefix_len += read_some(&self.fd, &mut self.prefix[self.prefix_len..], deadline)?;
            if self.prefix_len < 4 {
                continue;
            }
            self.prefix_len = 0;
            let len = u32::from_le_bytes(self.prefix) as usize;
            if len == 0 {
                return Err(TransportError::InvalidFrame("empty frame"));
            }
            if len > self.max_frame {
                // Refused before anything is allocated for it; its bytes are skipped by
                // the next calls so the stream stays in sync (contract clause 2).
                self.skip = len;
                return Err(TransportError::FrameTooLarge {
                    size: len,
                    max: self.max_frame,
                });
            }
            self.frame.clear();
            self.frame.resize(len, 0);
            self.filled = 0;
            self.body = Some(len);
        };
        while self.filled < len {
            self.filled += read_some(&self.fd, &mut self.frame[self.filled..len], deadline)?;
        }
        self.body = None;
        std::mem::swap(buf, &mut self.frame);
        Ok(())
    }
}
