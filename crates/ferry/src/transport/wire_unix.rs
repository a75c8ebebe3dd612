//! The byte stream under a framed link on Unix: a connected socket's file descriptor (a Unix
//! domain socket or TCP), used directly with `read`, `recv`, `poll` and `sendmsg`.
//!
//! Without a deadline a read is one blocking `read`. With one, a non-blocking `recv` comes
//! first (a frame already waiting costs no `poll`), then `poll` until the deadline. Writes
//! use `sendmsg` with the whole list of parts (vectored, no copy) and, on Linux, with
//! `MSG_NOSIGNAL`, so a dead peer is an `EPIPE` error and never a `SIGPIPE`.
//!
//! The two halves hold duplicates of one descriptor, so the socket stays open while either
//! lives. Dropping the sending half shuts down the writing direction (`shutdown(SHUT_WR)`):
//! the peer reads end of stream, as when a pipe's writer closes, even while this side still
//! receives.

use super::framed::{self, FramedReceiver, FramedSender, WireRead, WireWrite};
use super::{remaining, Link, TransportError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown};
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// The most `iovec`s handed to one `sendmsg` (POSIX guarantees at least 16, Linux 1024).
const MAX_IOV: usize = 512;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: SendFlags = SendFlags::empty();

/// The receiving half of a connected stream socket.
pub(crate) struct FdReader(OwnedFd);

/// The sending half of a connected stream socket; shuts down writing when dropped.
pub(crate) struct FdWriter(OwnedFd);

impl Drop for FdWriter {
    fn drop(&mut self) {
        // Fails harmlessly (ENOTCONN) when the peer is already gone.
        let _ = rustix::net::shutdown(&self.0, Shutdown::Write);
    }
}

fn io_err(e: Errno) -> TransportError {
    TransportError::from_io(e.into())
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(false)` on timeout.
pub(crate) fn wait_readable<Fd: AsFd>(fd: &Fd, timeout: Duration) -> Result<bool, TransportError> {
    let timeout = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
}

impl WireRead for FdReader {
    fn read(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<usize, TransportError> {
        loop {
            let Some(left) = remaining(deadline) else {
                match rustix::io::read(&self.0, &mut *dst) {
                    Ok(n) => return Ok(n),
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(io_err(e)),
                }
            };
            match rustix::net::recv(&self.0, &mut *dst, RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {}
                Err(e) => return Err(io_err(e)),
            }
            if left.is_zero() || !wait_readable(&self.0, left)? {
                return Err(TransportError::Timeout);
            }
        }
    }
}

impl WireWrite for FdWriter {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError> {
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        loop {
            let mut control = SendAncillaryBuffer::default();
            match rustix::net::sendmsg(&self.0, bufs, &mut control, SEND_FLAGS) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// The two halves of a framed link over a connected, blocking stream socket.
pub(crate) fn halves(fd: OwnedFd, max_frame: usize) -> Result<Halves, TransportError> {
    let writer = fd.try_clone()?;
    Ok((
        FramedReceiver::new(FdReader(fd), max_frame),
        FramedSender::new(FdWriter(writer), max_frame),
    ))
}

/// A framed link's two halves before they are boxed into a [`Link`].
pub(crate) type Halves = (FramedReceiver<FdReader>, FramedSender<FdWriter>);

/// Joins the halves into a link.
pub(crate) fn into_link(halves: Halves) -> Link {
    framed::link(halves.0, halves.1)
}
