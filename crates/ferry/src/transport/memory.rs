//! In-process transport: two channels. Used to test the layers above fast and
//! deterministically, and as the reference implementation of the contract.

use super::{checked_frame_len, FrameReceiver, FrameSender, Link, TransportError};
use crate::transport::Framing;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Instant;

struct MemorySender {
    tx: Sender<Vec<u8>>,
    max_frame: usize,
}

struct MemoryReceiver {
    rx: Receiver<Vec<u8>>,
}

impl FrameSender for MemorySender {
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        checked_frame_len(parts, self.max_frame)?;
        self.tx
            .send(parts.concat())
            .map_err(|_| TransportError::Disconnected)
    }
}

impl FrameReceiver for MemoryReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        let frame = match deadline {
            None => self.rx.recv().map_err(|_| TransportError::Disconnected)?,
            Some(d) if d <= Instant::now() => self.rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => TransportError::Timeout,
                TryRecvError::Disconnected => TransportError::Disconnected,
            })?,
            Some(d) => self.rx.recv_deadline(d).map_err(|e| match e {
                RecvTimeoutError::Timeout => TransportError::Timeout,
                RecvTimeoutError::Disconnected => TransportError::Disconnected,
            })?,
        };
        *buf = frame;
        Ok(())
    }
}

/// Two connected links, as if host and worker: what one sends, the other receives.
///
/// ```
/// use ferry::transport::memory;
/// let (mut host, mut worker) = memory::pair(1024);
/// host.sender.send(&[b"hello"])?;
/// let mut buf = Vec::new();
/// worker.receiver.recv(&mut buf, None)?;
/// assert_eq!(buf, b"hello");
/// # Ok::<(), ferry::transport::TransportError>(())
/// ```
pub fn pair(max_frame: usize) -> (Link, Link) {
    let (a_tx, a_rx) = crossbeam_channel::unbounded();
    let (b_tx, b_rx) = crossbeam_channel::unbounded();
    let link = |tx, rx| Link {
        sender: Box::new(MemorySender { tx, max_frame }),
        receiver: Box::new(MemoryReceiver { rx }),
        framing: Framing::LengthPrefixed,
        max_frame,
    };
    (link(a_tx, b_rx), link(b_tx, a_rx))
}
