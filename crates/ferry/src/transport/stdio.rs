//! stdio transport: NDJSON over a pair of pipes (the worker's stdin and stdout), and
//! optionally length-prefixed binary frames after the `ready` line.
//!
//! One frame is one line. Each frame is written with a single `write` of the line and its
//! newline, so concurrent writers never interleave within a line (the sender is `&mut`
//! anyway). Reads go through a 64 KiB buffer; a line is accumulated up to `max_frame`
//! bytes, after which the rest of it is skipped and the caller gets
//! [`TransportError::FrameTooLarge`] at once, with the stream still in sync.
//!
//! # Switching to length-prefixed frames
//!
//! A host may offer, and a worker accept, length-prefixed frames on stdio
//! (docs/protocol.md, "Binary frames on stdio"). Both halves then switch with
//! [`FrameSender::switch_framing`] and [`FrameReceiver::switch_framing`] right after the
//! `ready` line: from there on a frame is `u32 LE length | body`, exactly as on a socket
//! (the same code, `transport/framed.rs`, over the pipes: `read` and `writev`). Bytes the
//! line reader already read past the `ready` line are handed to the framed reader, so a
//! frame the peer sent right after `ready` is not lost.

use super::fd_io::{read_deadline, write_all};
use super::framed::{FramedReceiver, FramedSender, WireRead, WireWrite};
use super::{checked_frame_len, FrameReceiver, FrameSender, Link, TransportError};
use crate::transport::Framing;
use rustix::io::Errno;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

const READ_CHUNK: usize = 64 * 1024;

struct LineSender {
    fd: OwnedFd,
    line: Vec<u8>,
    max_frame: usize,
}

impl LineSender {
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

impl LineReceiver {
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

/// The most `iovec`s handed to one `writev` (POSIX guarantees at least 16, Linux 1024).
const MAX_IOV: usize = 512;

/// The read end of a pipe, as the byte stream under a framed link.
struct PipeReader(OwnedFd);

impl WireRead for PipeReader {
    fn read(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<usize, TransportError> {
        read_deadline(&self.0, dst, deadline)
    }
}

/// The write end of a pipe, as the byte stream under a framed link: vectored writes, so
/// attachments go from the caller's memory to the pipe without being copied together.
struct PipeWriter(OwnedFd);

impl WireWrite for PipeWriter {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError> {
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        loop {
            match rustix::io::writev(&self.0, bufs) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(TransportError::from_io(e.into())),
            }
        }
    }
}

/// The sending half of a stdio link: lines, or length-prefixed frames after a switch.
enum StdioSender {
    Lines(LineSender),
    Framed(FramedSender<PipeWriter>),
}

impl FrameSender for StdioSender {
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        match self {
            StdioSender::Lines(tx) => tx.send(parts),
            StdioSender::Framed(tx) => tx.send(parts),
        }
    }

    fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        match (&*self, framing) {
            (StdioSender::Lines(_), Framing::Lines)
            | (StdioSender::Framed(_), Framing::LengthPrefixed) => Ok(()),
            (StdioSender::Lines(tx), Framing::LengthPrefixed) => {
                let fd = tx.fd.try_clone()?;
                // The line sender (and its descriptor) drops here; the clone carries on.
                *self = StdioSender::Framed(FramedSender::new(PipeWriter(fd), tx.max_frame));
                Ok(())
            }
            (StdioSender::Framed(_), _) => Err(TransportError::Unsupported(
                "a stdio link switches from lines to length-prefixed frames only",
            )),
        }
    }
}

/// The receiving half of a stdio link: lines, or length-prefixed frames after a switch.
enum StdioReceiver {
    Lines(LineReceiver),
    Framed(FramedReceiver<PipeReader>),
}

impl FrameReceiver for StdioReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        match self {
            StdioReceiver::Lines(rx) => rx.recv(buf, deadline),
            StdioReceiver::Framed(rx) => rx.recv(buf, deadline),
        }
    }

    fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        match (&*self, framing) {
            (StdioReceiver::Lines(_), Framing::Lines)
            | (StdioReceiver::Framed(_), Framing::LengthPrefixed) => Ok(()),
            (StdioReceiver::Lines(rx), Framing::LengthPrefixed) => {
                if !rx.line.is_empty() || rx.discarding {
                    // Only between lines: a switch in the middle of one would misread it.
                    return Err(TransportError::InvalidFrame(
                        "switch to length-prefixed frames in the middle of a line",
                    ));
                }
                let fd = rx.fd.try_clone()?;
                let ahead = &rx.chunk[rx.pos..rx.filled];
                *self = StdioReceiver::Framed(FramedReceiver::with_read_ahead(
                    PipeReader(fd),
                    rx.max_frame,
                    ahead,
                ));
                Ok(())
            }
            (StdioReceiver::Framed(_), _) => Err(TransportError::Unsupported(
                "a stdio link switches from lines to length-prefixed frames only",
            )),
        }
    }
}

/// A line link over two file descriptors: `read` carries frames in, `write` out. Both
/// halves can switch to length-prefixed frames (see the module docs).
pub fn link_from_fds(read: OwnedFd, write: OwnedFd, max_frame: usize) -> Link {
    Link {
        sender: Box::new(StdioSender::Lines(LineSender {
            fd: write,
            line: Vec::new(),
            max_frame,
        })),
        receiver: Box::new(StdioReceiver::Lines(LineReceiver {
            fd: read,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            pos: 0,
            filled: 0,
            line: Vec::new(),
            discarding: false,
            max_frame,
        })),
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

/// [`pipe_pair`], both ends switched to length-prefixed frames (as after an accepted
/// offer, docs/protocol.md "Binary frames on stdio"), for tests and the conformance suite.
pub fn framed_pipe_pair(max_frame: usize) -> Result<(Link, Link), TransportError> {
    let (mut host, mut worker) = pipe_pair(max_frame)?;
    host.switch_framing(Framing::LengthPrefixed)?;
    worker.switch_framing(Framing::LengthPrefixed)?;
    Ok((host, worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 16;

    /// A host-end stdio link and the raw pipe ends the test writes to and reads from
    /// (as the worker would).
    fn raw_pair() -> (Link, OwnedFd, OwnedFd) {
        let flags = rustix::pipe::PipeFlags::CLOEXEC;
        let (to_host_r, to_host_w) = rustix::pipe::pipe_with(flags).unwrap();
        let (to_worker_r, to_worker_w) = rustix::pipe::pipe_with(flags).unwrap();
        (
            link_from_fds(to_host_r, to_worker_w, MAX),
            to_host_w,
            to_worker_r,
        )
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_read_ahead_past_the_ready_line_survive_the_switch() {
        let (mut host, worker_out, _worker_in) = raw_pair();
        // One write: the ready line and two frames behind it, so the line reader reads
        // the frames ahead along with the line.
        let mut bytes = b"{\"type\":\"event\"}\n".to_vec();
        bytes.extend_from_slice(&framed(b"one\n"));
        bytes.extend_from_slice(&framed(&[7u8; 3000]));
        write_all(&worker_out, &bytes).unwrap();
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"{\"type\":\"event\"}");
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        assert_eq!(host.framing, Framing::LengthPrefixed);
        host.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"one\n");
        host.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, vec![7u8; 3000]);
        // And more, written after the switch, read from the pipe itself.
        write_all(&worker_out, &framed(b"three")).unwrap();
        host.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"three");
    }

    #[test]
    fn the_sender_writes_length_prefixed_frames_after_the_switch() {
        let (mut host, _worker_out, worker_in) = raw_pair();
        host.sender.send(&[b"{}"]).unwrap();
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        host.sender.send(&[b"head\n", b"", b"tail"]).unwrap();
        let mut got = [0u8; 64];
        let mut n = 0;
        while n < 3 + 4 + 9 {
            n += read_deadline(&worker_in, &mut got[n..], None).unwrap();
        }
        let mut want = b"{}\n".to_vec();
        want.extend_from_slice(&framed(b"head\ntail"));
        assert_eq!(&got[..n], &want[..]);
    }

    #[test]
    fn an_oversized_frame_after_the_switch_is_refused_and_skipped() {
        let (mut host, worker_out, _worker_in) = raw_pair();
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        let mut bytes = framed(&vec![1u8; MAX + 1]);
        bytes.extend_from_slice(&framed(b"next"));
        let writer = std::thread::spawn(move || write_all(&worker_out, &bytes));
        let mut buf = Vec::new();
        match host.receiver.recv(&mut buf, None) {
            Err(TransportError::FrameTooLarge { size, max }) => {
                assert_eq!((size, max), (MAX + 1, MAX))
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        host.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"next");
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn a_garbage_length_after_the_switch_is_refused_without_allocating_it() {
        let (mut host, worker_out, _worker_in) = raw_pair();
        let mut bytes = b"{\"ready\":1}\n".to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        write_all(&worker_out, &bytes).unwrap();
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        let err = host.receiver.recv(&mut buf, None).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { size, .. } if size == u32::MAX as usize),
            "{err:?}"
        );
        assert!(
            buf.capacity() < MAX,
            "nothing was allocated for the announced length"
        );
        // A zero length is no frame either.
        let (mut host, worker_out, _worker_in) = raw_pair();
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        write_all(&worker_out, &[0, 0, 0, 0]).unwrap();
        assert!(matches!(
            host.receiver.recv(&mut buf, None),
            Err(TransportError::InvalidFrame(_))
        ));
    }

    #[test]
    fn eof_mid_frame_after_the_switch_is_disconnected() {
        let (mut host, worker_out, _worker_in) = raw_pair();
        let mut bytes = b"{}\n".to_vec();
        bytes.extend_from_slice(&10u32.to_le_bytes());
        bytes.extend_from_slice(b"half");
        write_all(&worker_out, &bytes).unwrap();
        let mut buf = Vec::new();
        host.receiver.recv(&mut buf, None).unwrap();
        host.switch_framing(Framing::LengthPrefixed).unwrap();
        // The partial frame survives a deadline that passes ...
        assert!(matches!(
            host.receiver.recv(&mut buf, Some(Instant::now())),
            Err(TransportError::Timeout)
        ));
        drop(worker_out);
        // ... and end of stream inside it is a disconnect.
        assert!(matches!(
            host.receiver.recv(&mut buf, None),
            Err(TransportError::Disconnected)
        ));
    }

    #[test]
    fn a_switch_in_the_middle_of_a_line_is_refused() {
        let (mut host, worker_out, _worker_in) = raw_pair();
        write_all(&worker_out, b"{\"partial\":").unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            host.receiver.recv(&mut buf, Some(Instant::now())),
            Err(TransportError::Timeout)
        ));
        assert!(matches!(
            host.receiver.switch_framing(Framing::LengthPrefixed),
            Err(TransportError::InvalidFrame(_))
        ));
        // Switching back is not a thing.
        host.sender.switch_framing(Framing::LengthPrefixed).unwrap();
        assert!(matches!(
            host.sender.switch_framing(Framing::Lines),
            Err(TransportError::Unsupported(_))
        ));
    }
}
