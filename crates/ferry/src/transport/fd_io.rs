//! Blocking reads and writes on raw file descriptors, with an optional deadline.

use super::{remaining, TransportError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::os::fd::AsFd;
use std::time::Instant;

/// Reads once into `buf`, waiting until `deadline` at most. `Ok(0)` is end of file.
pub(crate) fn read_deadline<Fd: AsFd>(
    fd: &Fd,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, TransportError> {
    loop {
        if let Some(left) = remaining(deadline) {
            let timeout = Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Err(TransportError::Timeout),
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(TransportError::from_io(e.into())),
            }
        }
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(TransportError::from_io(e.into())),
        }
    }
}

/// Writes all of `bytes`.
pub(crate) fn write_all<Fd: AsFd>(fd: &Fd, mut bytes: &[u8]) -> Result<(), TransportError> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(TransportError::from_io(e.into())),
        }
    }
    Ok(())
}
