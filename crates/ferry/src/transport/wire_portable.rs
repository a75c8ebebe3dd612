//! The byte stream under a framed link where file descriptors and `poll` do not exist
//! (Windows named pipes and sockets): std `Read`/`Write` objects.
//!
//! Named pipes have no read timeouts and no `poll`, so a thread per link does the blocking
//! reads and hands the bytes over a channel; the receiver waits on the channel with the
//! deadline. That costs one thread hop per read, which the Unix path does not pay.
//! (Native overlapped I/O would remove it; it is not built yet.)

use super::framed::{self, FramedReceiver, FramedSender, WireRead, WireWrite};
use super::{Link, TransportError};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::io::{IoSlice, Read, Write};
use std::time::Instant;

const CHUNK: usize = 64 * 1024;

/// Reads arrive from a thread doing blocking reads; `Err` ends the stream.
pub(crate) struct ThreadWire {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    ended: Option<std::io::ErrorKind>,
}

impl WireRead for ThreadWire {
    fn read(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<usize, TransportError> {
        if self.pos == self.current.len() {
            if let Some(kind) = self.ended {
                return match kind {
                    std::io::ErrorKind::UnexpectedEof => Ok(0),
                    other => Err(TransportError::from_io(other.into())),
                };
            }
            let next = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) if d <= Instant::now() => self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                Some(d) => self.rx.recv_deadline(d),
            };
            match next {
                Ok(Ok(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.ended = Some(e.kind());
                    return self.read(dst, deadline);
                }
                Err(RecvTimeoutError::Timeout) => return Err(TransportError::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = (self.current.len() - self.pos).min(dst.len());
        dst[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Shuts down the writing direction when the sending half is dropped, so the peer reads end
/// of stream although the reader thread still holds a handle.
pub(crate) trait CloseWrite {
    /// Signals end of stream to the peer (a no-op where the stream has no such thing).
    fn close_write(&self) {}
}

impl CloseWrite for std::net::TcpStream {
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// Named pipes have no half-close: the peer sees the end once both handles are closed.
impl CloseWrite for interprocess::local_socket::Stream {}

#[cfg(all(test, unix))]
impl CloseWrite for std::os::unix::net::UnixStream {
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// Writes go straight to the stream (`write_vectored` where the platform has it).
pub(crate) struct StdWire<W: CloseWrite>(W);

impl<W: CloseWrite> Drop for StdWire<W> {
    fn drop(&mut self) {
        self.0.close_write();
    }
}

/// A framed link's two halves before they are boxed into a [`Link`].
pub(crate) type Halves<W> = (FramedReceiver<ThreadWire>, FramedSender<StdWire<W>>);

impl<W: Write + Send + CloseWrite> WireWrite for StdWire<W> {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError> {
        loop {
            match self.0.write_vectored(bufs) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::from_io(e)),
            }
        }
    }
}

/// The two halves of a framed link over a stream's read and write handles.
pub(crate) fn halves<R, W>(
    mut reader: R,
    writer: W,
    max_frame: usize,
) -> Result<Halves<W>, TransportError>
where
    R: Read + Send + 'static,
    W: Write + Send + CloseWrite + 'static,
{
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("ferry-link-reader".into())
        .spawn(move || loop {
            let mut chunk = vec![0; CHUNK];
            let item = match reader.read(&mut chunk) {
                Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    chunk.truncate(n);
                    Ok(chunk)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let last = item.is_err();
            if tx.send(item).is_err() || last {
                return;
            }
        })?;
    let wire = ThreadWire {
        rx,
        current: Vec::new(),
        pos: 0,
        ended: None,
    };
    Ok((
        FramedReceiver::new(wire, max_frame),
        FramedSender::new(StdWire(writer), max_frame),
    ))
}

/// Joins the halves into a link.
pub(crate) fn into_link<W: Write + Send + CloseWrite + 'static>(halves: Halves<W>) -> Link {
    framed::link(halves.0, halves.1)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::transport::TransportError;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn thread_wire_moves_frames_and_keeps_deadlines() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut host = into_link(halves(a.try_clone().unwrap(), a, 1024).unwrap());
        let mut worker = into_link(halves(b.try_clone().unwrap(), b, 1024).unwrap());
        let mut buf = Vec::new();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            worker.receiver.recv(&mut buf, Some(soon)),
            Err(TransportError::Timeout)
        ));
        host.sender.send(&[b"he", b"llo"]).unwrap();
        worker.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"hello");
        drop(host);
        assert!(matches!(
            worker.receiver.recv(&mut buf, None),
            Err(TransportError::Disconnected)
        ));
    }
}
