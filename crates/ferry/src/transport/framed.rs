//! Length-prefixed framing over a byte stream, shared by `local_socket` and `tcp`.
//!
//! On the wire a frame is `u32 little-endian length | length bytes`; the length is never 0
//! and never above the link's `max_frame`. The codec layer already produces the frame body
//! for [`Framing::LengthPrefixed`]; this module only delimits it.
//!
//! - **Sending** writes `[prefix, part 0, part 1, ...]` with vectored writes, so attachments go
//!   from the caller's memory to the kernel without being copied together first. Partial writes
//!   resume where the kernel stopped, across parts.
//! - **Receiving** keeps its partial-read state (prefix bytes, the frame being filled) in the
//!   receiver, so a deadline that passes mid-frame loses nothing. A length above `max_frame`
//!   is refused with [`TransportError::FrameTooLarge`] before anything is allocated for it;
//!   the announced bytes are then skipped through the fixed read-ahead buffer so the stream
//!   stays in sync. End of stream, even mid-frame, is [`TransportError::Disconnected`].
//! - Small frames come through a 64 KiB read-ahead buffer (one `read` gets the prefix and
//!   the body); the rest of a large frame is read straight into the frame's buffer.

use super::{checked_frame_len, FrameReceiver, FrameSender, Link, TransportError};
use crate::transport::Framing;
use std::io::IoSlice;
use std::time::Instant;

/// Bytes of the length prefix.
pub(crate) const PREFIX_LEN: usize = 4;

/// Size of the read-ahead buffer; the rest of a frame at least this large is read directly.
const READ_AHEAD: usize = 64 * 1024;

/// Parts sent without allocating an `IoSlice` list (prefix included).
const INLINE_PARTS: usize = 8;

/// A frame buffer larger than this is not kept for reuse after the frame is handed out.
const KEEP_CAPACITY: usize = 16 * 1024 * 1024;

/// The reading side of a byte stream.
pub(crate) trait WireRead: Send {
    /// Reads at least one byte into `dst` (`Ok(0)`: end of stream), waiting until `deadline`
    /// at most ([`TransportError::Timeout`] then). A deadline already past does not block.
    fn read(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<usize, TransportError>;
}

/// The writing side of a byte stream.
pub(crate) trait WireWrite: Send {
    /// Writes some prefix of the concatenation of `bufs`, blocking until at least one byte
    /// is written; returns how many.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError>;
}

/// The largest frame a link can carry: `max_frame`, and never more than a `u32` prefix says.
fn frame_limit(max_frame: usize) -> usize {
    max_frame.min(u32::MAX as usize)
}

/// Sends length-prefixed frames.
pub(crate) struct FramedSender<W> {
    wire: W,
    max_frame: usize,
}

impl<W: WireWrite> FramedSender<W> {
    pub(crate) fn new(wire: W, max_frame: usize) -> Self {
        FramedSender { wire, max_frame }
    }

    /// Writes every byte of `bufs`, resuming after partial writes.
    fn write_all(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<(), TransportError> {
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let n = self.wire.write_vectored(bufs)?;
            if n == 0 {
                return Err(TransportError::Disconnected);
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }
}

impl<W: WireWrite> FrameSender for FramedSender<W> {
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        let size = checked_frame_len(parts, frame_limit(self.max_frame))?;
        let prefix = (size as u32).to_le_bytes();
        if parts.len() < INLINE_PARTS {
            let mut iov = [IoSlice::new(&[]); INLINE_PARTS];
            iov[0] = IoSlice::new(&prefix);
            for (slot, part) in iov[1..].iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
            }
            self.write_all(&mut iov[..=parts.len()])
        } else {
            let mut iov = Vec::with_capacity(parts.len() + 1);
            iov.push(IoSlice::new(&prefix));
            iov.extend(parts.iter().map(|p| IoSlice::new(p)));
            self.write_all(&mut iov)
        }
    }
}

/// Receives length-prefixed frames; all partial-read state lives here.
pub(crate) struct FramedReceiver<R> {
    wire: R,
    /// Read-ahead buffer; `chunk[pos..filled]` is not consumed yet.
    chunk: Box<[u8]>,
    pos: usize,
    filled: usize,
    /// Prefix bytes of the next frame seen so far (`prefix_len` of them).
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// The frame being filled: `Some(length)` once its prefix is read. `frame` then has that
    /// length and its first `got` bytes are received.
    want: Option<usize>,
    frame: Vec<u8>,
    got: usize,
    /// Bytes of a refused (oversized) frame still to skip.
    skip: usize,
    max_frame: usize,
}

impl<R: WireRead> FramedReceiver<R> {
    pub(crate) fn new(wire: R, max_frame: usize) -> Self {
        FramedReceiver {
            wire,
            chunk: vec![0; READ_AHEAD].into_boxed_slice(),
            pos: 0,
            filled: 0,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            want: None,
            frame: Vec::new(),
            got: 0,
            skip: 0,
            max_frame,
        }
    }

    /// A receiver that first consumes `ahead`: bytes another reader of the same stream
    /// already read past its last frame (stdio's line reader, when the link switches to
    /// length-prefixed frames after `ready`).
    pub(crate) fn with_read_ahead(wire: R, max_frame: usize, ahead: &[u8]) -> Self {
        let mut receiver = Self::new(wire, max_frame);
        if ahead.len() <= READ_AHEAD {
            receiver.chunk[..ahead.len()].copy_from_slice(ahead);
            receiver.filled = ahead.len();
        } else {
            // Never the case for stdio (its read-ahead is as large), but stay correct.
            receiver.chunk = ahead.into();
            receiver.filled = ahead.len();
        }
        receiver
    }

    /// Changes the largest frame accepted from now on (the handshake uses a small one).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Consumes read-ahead bytes. `Some` when a frame completed or was refused.
    fn consume(&mut self, buf: &mut Vec<u8>) -> Option<Result<(), TransportError>> {
        let avail = &self.chunk[self.pos..self.filled];
        if self.skip > 0 {
            let take = self.skip.min(avail.len());
            self.skip -= take;
            self.pos += take;
            return None;
        }
        let Some(want) = self.want else {
            let take = (PREFIX_LEN - self.prefix_len).min(avail.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&avail[..take]);
            self.prefix_len += take;
            self.pos += take;
            if self.prefix_len < PREFIX_LEN {
                return None;
            }
            self.prefix_len = 0;
            return self.start_frame(u32::from_le_bytes(self.prefix) as usize);
        };
        let take = (want - self.got).min(avail.len());
        self.frame[self.got..self.got + take].copy_from_slice(&avail[..take]);
        self.got += take;
        self.pos += take;
        self.finish_if_complete(buf)
    }

    /// Checks an announced length and sizes the frame buffer for it.
    fn start_frame(&mut self, len: usize) -> Option<Result<(), TransportError>> {
        if len == 0 {
            return Some(Err(TransportError::InvalidFrame("empty frame")));
        }
        if len > self.max_frame {
            // Refused before any allocation; skip its bytes to stay in sync.
            self.skip = len;
            return Some(Err(TransportError::FrameTooLarge {
                size: len,
                max: self.max_frame,
            }));
        }
        // Why not `clear` then `resize`: the bytes are overwritten by the read anyway, and
        // keeping the old length avoids zero-filling a buffer of the same size every frame.
        if self.frame.len() < len {
            self.frame.resize(len, 0);
        } else {
            self.frame.truncate(len);
        }
        self.want = Some(len);
        self.got = 0;
        None
    }

    fn finish_if_complete(&mut self, buf: &mut Vec<u8>) -> Option<Result<(), TransportError>> {
        if self.want != Some(self.got) {
            return None;
        }
        self.want = None;
        std::mem::swap(buf, &mut self.frame);
        if self.frame.capacity() > KEEP_CAPACITY {
            self.frame = Vec::new();
        }
        Some(Ok(()))
    }
}

impl<R: WireRead> FrameReceiver for FramedReceiver<R> {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        loop {
            while self.pos < self.filled {
                if let Some(result) = self.consume(buf) {
                    return result;
                }
            }
            if let Some(want) = self.want.filter(|w| w - self.got >= READ_AHEAD) {
                // The rest of a large frame goes straight into its buffer, never further
                // (the next frame's bytes stay in the kernel for the read-ahead).
                let n = self.wire.read(&mut self.frame[self.got..want], deadline)?;
                if n == 0 {
                    return Err(TransportError::Disconnected);
                }
                self.got += n;
                if let Some(result) = self.finish_if_complete(buf) {
                    return result;
                }
                continue;
            }
            let n = self.wire.read(&mut self.chunk, deadline)?;
            if n == 0 {
                return Err(TransportError::Disconnected);
            }
            self.pos = 0;
            self.filled = n;
        }
    }
}

/// A framed link over a stream's two halves.
pub(crate) fn link<R, W>(receiver: FramedReceiver<R>, sender: FramedSender<W>) -> Link
where
    R: WireRead + 'static,
    W: WireWrite + 'static,
{
    let max_frame = sender.max_frame;
    Link {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        framing: Framing::LengthPrefixed,
        max_frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted stream: each read returns the next scripted piece (or a timeout).
    struct Script(VecDeque<Option<Vec<u8>>>);

    impl WireRead for Script {
        fn read(
            &mut self,
            dst: &mut [u8],
            _deadline: Option<Instant>,
        ) -> Result<usize, TransportError> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(None) => Err(TransportError::Timeout),
                Some(Some(mut bytes)) => {
                    let n = bytes.len().min(dst.len());
                    dst[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.0.push_front(Some(bytes.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    fn receiver(pieces: Vec<Option<&[u8]>>, max: usize) -> FramedReceiver<Script> {
        FramedReceiver::new(
            Script(pieces.into_iter().map(|p| p.map(<[u8]>::to_vec)).collect()),
            max,
        )
    }

    #[test]
    fn prefix_split_across_reads_and_a_timeout_mid_frame_lose_nothing() {
        let mut rx = receiver(
            vec![
                Some(&[5, 0]),
                None,
                Some(&[0, 0, b'h', b'e']),
                None,
                Some(b"llo"),
            ],
            64,
        );
        let mut buf = Vec::new();
        assert!(matches!(
            rx.recv(&mut buf, None),
            Err(TransportError::Timeout)
        ));
        assert!(matches!(
            rx.recv(&mut buf, None),
            Err(TransportError::Timeout)
        ));
        rx.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn oversized_prefix_is_refused_then_the_stream_resyncs() {
        let mut wire = vec![100u8, 0, 0, 0];
        wire.extend_from_slice(&[7; 100]);
        wire.extend_from_slice(&[2, 0, 0, 0, b'o', b'k']);
        let mut rx = receiver(vec![Some(&wire)], 10);
        let mut buf = Vec::new();
        let err = rx.recv(&mut buf, None).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { size: 100, max: 10 }),
            "{err:?}"
        );
        assert_eq!(
            rx.frame.capacity(),
            0,
            "nothing allocated for the refused frame"
        );
        rx.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"ok");
    }

    #[test]
    fn end_of_stream_mid_frame_is_disconnected() {
        let mut rx = receiver(vec![Some(&[9, 0, 0, 0, 1, 2, 3])], 64);
        let mut buf = Vec::new();
        assert!(matches!(
            rx.recv(&mut buf, None),
            Err(TransportError::Disconnected)
        ));
    }

    #[test]
    fn zero_length_prefix_is_an_invalid_frame() {
        let mut rx = receiver(vec![Some(&[0, 0, 0, 0, 1, 0, 0, 0, b'x'])], 64);
        let mut buf = Vec::new();
        assert!(matches!(
            rx.recv(&mut buf, None),
            Err(TransportError::InvalidFrame(_))
        ));
        rx.recv(&mut buf, None).unwrap();
        assert_eq!(buf, b"x");
    }

    /// A writer that accepts at most `step` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl WireWrite for Trickle {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, TransportError> {
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Ok(self.step - left)
        }
    }

    #[test]
    fn partial_vectored_writes_resume_across_parts() {
        for parts in [1usize, 3, 12] {
            let data: Vec<Vec<u8>> = (0..parts).map(|i| vec![i as u8; 5 + i]).collect();
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut tx = FramedSender::new(
                Trickle {
                    out: Vec::new(),
                    step: 3,
                },
                1024,
            );
            tx.send(&refs).unwrap();
            let body = data.concat();
            let mut want = (body.len() as u32).to_le_bytes().to_vec();
            want.extend_from_slice(&body);
            assert_eq!(tx.wire.out, want);
        }
    }
}
