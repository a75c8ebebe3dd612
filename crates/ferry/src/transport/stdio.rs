//! stdio transport: NDJSON over a pair of pipes (the worker's stdin and stdout).
//!
//! One frame is one line. Each frame is written with a single `write` of the line and its
//! newline, so concurrent writers never interleave within a line (the sender is `&mut`
//! anyway). Reads go through a 64 KiB buffer; a line is accumulated up to `max_frame`
//! bytes, after which the rest of it is skipped and the caller gets
//! [`TransportError::FrameTooLarge`] at once, with the stream still in sync.

use super::fd_io::{read_deadline, write_all};
use super::{checked_frame_len, FrameReceiver, FrameSender, Link, TransportError};
use crate::transport::Framing;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

const READ_CHUNK: usize = 64 * 1024;

struct LineSender {
    fd: OwnedFd,
    line: Vec<u8>,
    max_frame: usize,
}

impl FrameSender for LineSender {
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        checked_frame_len(parts, self.max_frame)?;
        self.line.clear();
        for part in parts {
            if memchr::memchr(b'\n', part).is_some() {
                return Err(TransportError::InvalidFrame("newline inside a line frame"));
            }
            self.line.extend_from_slice(part);
        }
        self.line.push(b'\n');
        let result = write_all(&self.fd, &self.line);
        if self.line.capacity() > READ_CHUNK * 4 {
            // Why: one 64 MiB frame should not pin 64 MiB for the life of the link.
            self.line = Vec::new();
        }
        result
    }
}

struct LineReceiver {
    fd: OwnedFd,
    chunk: Box<[u8]>,
    pos: usize,
    filled: usize,
    /// The line being assembled; survives a timeout.
    line: Vec<u8>,
    /// Skipping the rest of an oversized line.
    discarding: bool,
    max_frame: usize,
}

impl LineReceiver {
    /// Consumes buffered bytes. Returns `Some(result)` when a line ended or overflowed.
    fn scan(&mut self, buf: &mut Vec<u8>) -> Option<Result<(), TransportError>> {
        let avail = &self.chunk[self.pos..self.filled];
        let (take, ended) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        let consumed = take + usize::from(ended);
        if self.discarding {
            self.pos += consumed;
            if ended {
                self.discarding = false;
            }
            return None;
        }
        if self.line.len() + take > self.max_frame {
            let size = self.line.len() + take;
            self.line.clear();
            self.pos += consumed;
            self.discarding = !ended;
            return Some(Err(TransportError::FrameTooLarge {
                size,
                max: self.max_frame,
            }));
        }
        self.line.extend_from_slice(&avail[..take]);
        self.pos += consumed;
        if !ended {
            return None;
        }
        if self.line.is_empty() {
            // A blank line carries nothing; skip it rather than hand out an empty frame.
            return None;
        }
        std::mem::swap(buf, &mut self.line);
        self.line.clear();
        Some(Ok(()))
    }
}

impl FrameReceiver for LineReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        loop {
            while self.pos < self.filled {
                if let Some(result) = self.scan(buf) {
                    return result;
                }
            }
            self.pos = 0;
            self.filled = 0;
            let n = read_deadline(&self.fd, &mut self.chunk, deadline)?;
            if n == 0 {
                return Err(TransportError::Disconnected);
            }
            self.filled = n;
        }
    }
}

/// A line link over two file descriptors: `read` carries frames in, `write` out.
pub fn link_from_fds(read: OwnedFd, write: OwnedFd, max_frame: usize) -> Link {
    Link {
        sender: Box::new(LineSender {
            fd: write,
            line: Vec::new(),
            max_frame,
        }),
        receiver: Box::new(LineReceiver {
            fd: read,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            pos: 0,
            filled: 0,
            line: Vec::new(),
            discarding: false,
            max_frame,
        }),
        framing: Framing::Lines,
        max_frame,
    }
}

/// The worker's end: takes the protocol off fds 0 and 1 before user code runs.
///
/// fd 1 is duplicated for the protocol and then pointed at stderr, so a library that
/// prints goes to the host's log instead of corrupting the channel; fd 0 is duplicated
/// and pointed at `/dev/null`, so nothing else reads protocol bytes. The duplicates are
/// close-on-exec: a subprocess the worker starts does not inherit the channel.
pub fn worker_link(max_frame: usize) -> Result<Link, TransportError> {
    let io = |e: rustix::io::Errno| TransportError::Io(e.into());
    let proto_out = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3).map_err(io)?;
    let proto_in = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3).map_err(io)?;
    rustix::stdio::dup2_stdout(rustix::stdio::stderr()).map_err(io)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(null.as_fd()).map_err(io)?;
    Ok(link_from_fds(proto_in, proto_out, max_frame))
}

/// The host's end over a spawned child's stdout (frames in) and stdin (frames out).
pub fn host_link(
    child_stdout: std::process::ChildStdout,
    child_stdin: std::process::ChildStdin,
    max_frame: usize,
) -> Link {
    link_from_fds(child_stdout.into(), child_stdin.into(), max_frame)
}

/// Two connected line links over OS pipes in this process (host end, worker end), for
/// tests and for running the conformance suite against the real stdio code.
pub fn pipe_pair(max_frame: usize) -> Result<(Link, Link), TransportError> {
    let io = |e: rustix::io::Errno| TransportError::Io(e.into());
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (to_worker_r, to_worker_w) = rustix::pipe::pipe_with(flags).map_err(io)?;
    let (to_host_r, to_host_w) = rustix::pipe::pipe_with(flags).map_err(io)?;
    Ok((
        link_from_fds(to_host_r, to_worker_w, max_frame),
        link_from_fds(to_worker_r, to_host_w, max_frame),
    ))
}
