//! The two ends of a shm link: [`ShmSender`] writes frames into its ring, [`ShmReceiver`]
//! reads them out of the other (by copy, or in place with [`ShmReceiver::recv_in_place`]).

use super::liveness::Liveness;
use super::ring::{
    align8, max_record, max_whole_frame, Consumer, Producer, Record, RingControl, ABORT, CONT,
    FIRST, FIRST_HEADER, HEADER,
};
use super::segment::{Segment, Side};
use super::sync::{Ordering, Shared};
use super::wait::{WaitConfig, Waiter, Words};
use super::ShmOptions;
use crate::transport::Framing;
use crate::transport::{checked_frame_len, FrameReceiver, FrameSender, Link, TransportError};
use std::sync::Arc;
use std::time::Instant;

/// Sends between two looks at the peer process when no wait happens.
const LIVENESS_EVERY_SENDS: u32 = 256;
/// The smallest chunk cut short at the end of the data area (else: padding).
const MIN_CUT: usize = 256;
/// A reassembly buffer above this many bytes is not kept between frames.
const KEEP_PARTIAL: usize = 8 << 20;

/// The sending end of a shm link: writes frames into its ring.
pub struct ShmSender {
    prod: Producer,
    ctl: Shared<RingControl>,
    waiter: Waiter,
    max_frame: usize,
    send_timeout: Option<std::time::Duration>,
    /// A chunked frame was cut off by a send timeout: tell the receiver before the next one.
    abort_pending: bool,
    sends: u32,
}

impl std::fmt::Debug for ShmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmSender")
            .field("capacity", &self.prod.capacity())
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

/// Walks the bytes of a frame given as parts.
struct Parts<'a> {
    parts: &'a [&'a [u8]],
    index: usize,
    offset: usize,
}

impl<'a> Parts<'a> {
    /// Copies the next `n` bytes into the ring at `at`.
    fn copy_into(&mut self, prod: &mut Producer, mut at: usize, mut n: usize) {
        while n > 0 {
            let part = self.parts[self.index];
            let take = (part.len() - self.offset).min(n);
            prod.write(at, &part[self.offset..self.offset + take]);
            at += take;
            n -= take;
            self.offset += take;
            if self.offset == part.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

impl ShmSender {
    /// Claims `size` bytes, waiting for the consumer to free them.
    fn claim(&mut self, size: usize, deadline: Option<Instant>) -> Result<usize, TransportError> {
        loop {
            if let Some(off) = self.prod.claim(size)? {
                return Ok(off);
            }
            let prod = &mut self.prod;
            let ctl = &self.ctl;
            self.waiter
                .wait(deadline, &mut || prod.has_space(size), &|| {
                    consumer_closed(ctl)
                })?;
        }
    }

    fn commit(&mut self) {
        if self.prod.commit() {
            self.prod.wake_consumer();
        }
    }

    fn write_abort(&mut self, deadline: Option<Instant>) -> Result<(), TransportError> {
        let off = self.claim(HEADER, deadline)?;
        self.prod.write_header(off, 0, ABORT);
        self.commit();
        self.abort_pending = false;
        Ok(())
    }

    fn send_chunked(
        &mut self,
        parts: &mut Parts<'_>,
        total: usize,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        let limit = max_record(self.prod.capacity());
        let mut left = total;
        let mut first = true;
        while left > 0 {
            let header = if first { FIRST_HEADER } else { HEADER };
            let mut len = left.min(limit - header);
            // A chunk may end anywhere, so rather than pad to the end of the data area,
            // cut it there (unless only a sliver is left before the end).
            let contiguous = self.prod.contiguous();
            if align8(header + len) > contiguous && contiguous >= header + MIN_CUT {
                len = contiguous - header;
            }
            let off = match self.claim(align8(header + len), deadline) {
                Ok(off) => off,
                Err(e) => {
                    // Chunks already published: the receiver must drop them.
                    self.abort_pending = !first;
                    return Err(e);
                }
            };
            if first {
                self.prod.write_header(off, len as u32, FIRST);
                self.prod.write(off + HEADER, &(total as u64).to_le_bytes());
            } else {
                self.prod.write_header(off, len as u32, CONT);
            }
            parts.copy_into(&mut self.prod, off + header, len);
            self.commit();
            left -= len;
            first = false;
        }
        Ok(())
    }
}

fn consumer_closed(ctl: &RingControl) -> bool {
    // SYNC POINT: Acquire pairs with the Release store in `Consumer::close`.
    ctl.closed.consumer.load(Ordering::Acquire) != 0
}

fn producer_closed(ctl: &RingControl) -> bool {
    // SYNC POINT: Acquire pairs with the Release store in `Producer::close`.
    ctl.closed.producer.load(Ordering::Acquire) != 0
}

impl FrameSender for ShmSender {
    /// Writes the frame straight from `parts` into the ring. Blocks while the ring is full
    /// (backpressure) until the receiver frees space, its end closes or its process dies,
    /// or the send timeout of [`ShmOptions`] (if set) passes: [`TransportError::Timeout`].
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        let size = checked_frame_len(parts, self.max_frame)?;
        if consumer_closed(&self.ctl) {
            return Err(TransportError::Disconnected);
        }
        self.sends += 1;
        if self.sends >= LIVENESS_EVERY_SENDS {
            self.sends = 0;
            if !self.waiter.peer_alive(Instant::now()) {
                return Err(TransportError::Disconnected);
            }
        }
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        if self.abort_pending {
            self.write_abort(deadline)?;
        }
        let mut cursor = Parts {
            parts,
            index: 0,
            offset: 0,
        };
        if size <= max_whole_frame(self.prod.capacity()) {
            let off = self.claim(align8(HEADER + size), deadline)?;
            self.prod.write_header(off, size as u32, 0);
            cursor.copy_into(&mut self.prod, off + HEADER, size);
            self.commit();
            Ok(())
        } else {
            self.send_chunked(&mut cursor, size, deadline)
        }
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.prod.close();
    }
}

/// Where a chunked frame being received stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assembly {
    /// Between frames.
    Idle,
    /// Collecting a frame of `total` bytes in `partial`.
    Assembling { total: usize },
    /// Skipping the rest of a frame refused as too large.
    Discarding { left: u64 },
}

/// What one record did to the frame being received.
enum Step {
    /// A whole frame in this one record, still in the ring.
    Whole(Record),
    /// A chunked frame is complete in `partial`.
    Assembled,
    /// Nothing complete yet.
    More,
}

/// The receiving end of a shm link: reads frames out of its ring.
pub struct ShmReceiver {
    cons: Consumer,
    ctl: Shared<RingControl>,
    waiter: Waiter,
    max_frame: usize,
    partial: Vec<u8>,
    state: Assembly,
}

impl std::fmt::Debug for ShmReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmReceiver")
            .field("max_frame", &self.max_frame)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ShmReceiver {
    fn next_record(&mut self, deadline: Option<Instant>) -> Result<Record, TransportError> {
        if let Some(rec) = self.cons.peek()? {
            return Ok(rec);
        }
        let mut found = None;
        let cons = &mut self.cons;
        let ctl = &self.ctl;
        self.waiter.wait(
            deadline,
            &mut || {
                found = cons.peek()?;
                Ok(found.is_some())
            },
            &|| producer_closed(ctl),
        )?;
        found.ok_or(TransportError::Disconnected)
    }

    fn release(&mut self, rec: &Record) {
        if self.cons.release(rec) {
            self.cons.wake_producer();
        }
    }

    fn step(&mut self, rec: Record) -> Result<Step, TransportError> {
        let corrupt = |what| {
            tracing::error!(what, "shared-memory ring corrupted");
            Err(TransportError::InvalidFrame(what))
        };
        match (self.state, rec.flags) {
            (_, ABORT) => {
                self.state = Assembly::Idle;
                self.partial.clear();
                self.release(&rec);
                Ok(Step::More)
            }
            (Assembly::Idle, 0) => {
                if rec.len > self.max_frame {
                    self.release(&rec);
                    return Err(TransportError::FrameTooLarge {
                        size: rec.len,
                        max: self.max_frame,
                    });
                }
                Ok(Step::Whole(rec))
            }
            (Assembly::Idle, FIRST) => {
                if rec.total > self.max_frame as u64 {
                    self.state = Assembly::Discarding {
                        left: rec.total.saturating_sub(rec.len as u64),
                    };
                    self.release(&rec);
                    return Err(TransportError::FrameTooLarge {
                        size: usize::try_from(rec.total).unwrap_or(usize::MAX),
                        max: self.max_frame,
                    });
                }
                let total = rec.total as usize;
                if rec.len > total {
                    return corrupt("shm chunk longer than its frame");
                }
                self.partial.clear();
                self.partial.reserve(total);
                self.cons.append_to(&rec, &mut self.partial);
                self.release(&rec);
                if rec.len == total {
                    return Ok(Step::Assembled);
                }
                self.state = Assembly::Assembling { total };
                Ok(Step::More)
            }
            (Assembly::Assembling { total }, CONT) => {
                if self.partial.len() + rec.len > total {
                    return corrupt("shm chunk longer than its frame");
                }
                self.cons.append_to(&rec, &mut self.partial);
                self.release(&rec);
                if self.partial.len() == total {
                    self.state = Assembly::Idle;
                    return Ok(Step::Assembled);
                }
                Ok(Step::More)
            }
            (Assembly::Discarding { left }, CONT) => {
                let Some(left) = left.checked_sub(rec.len as u64) else {
                    return corrupt("shm chunk longer than its frame");
                };
                self.state = if left == 0 {
                    Assembly::Idle
                } else {
                    Assembly::Discarding { left }
                };
                self.release(&rec);
                Ok(Step::More)
            }
            _ => corrupt("shm record out of sequence"),
        }
    }

    /// Receives the next frame **in place**: the returned guard derefs to the frame's
    /// bytes inside the shared ring, with no copy, and gives the space back to the sender
    /// when dropped. Waits until `deadline` at most, like [`FrameReceiver::recv`].
    ///
    /// A frame larger than half the ring's capacity travels in chunks; such a frame is
    /// assembled into a buffer the receiver keeps (one copy) and the guard borrows that.
    /// [`InPlaceFrame::is_in_ring`] tells which. Hold the guard briefly: while it lives the
    /// sender cannot reuse that space, and a full ring blocks it.
    ///
    /// ```
    /// use ferry::transport::shm::{self, ShmOptions};
    /// use ferry::transport::FrameSender;
    /// let (mut host, mut worker) = shm::pair(&ShmOptions::default(), 1 << 20)?;
    /// host.sender.send(&[b"header|", &[7u8; 1000]])?;
    /// let frame = worker.receiver.recv_in_place(None)?;
    /// assert!(frame.is_in_ring());
    /// assert_eq!(&frame[..7], b"header|");
    /// assert_eq!(frame.len(), 1007);
    /// drop(frame); // the ring space is released here
    /// # Ok::<(), ferry::transport::TransportError>(())
    /// ```
    pub fn recv_in_place(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<InPlaceFrame<'_>, TransportError> {
        loop {
            let rec = self.next_record(deadline)?;
            match self.step(rec)? {
                #[cfg(not(loom))]
                Step::Whole(rec) => {
                    return Ok(InPlaceFrame {
                        rx: self,
                        record: Some(rec),
                    })
                }
                #[cfg(loom)]
                Step::Whole(rec) => {
                    self.partial.clear();
                    self.cons.append_to(&rec, &mut self.partial);
                    self.release(&rec);
                    return Ok(InPlaceFrame {
                        rx: self,
                        record: None,
                    });
                }
                Step::Assembled => {
                    return Ok(InPlaceFrame {
                        rx: self,
                        record: None,
                    })
                }
                Step::More => {}
            }
        }
    }
}

impl FrameReceiver for ShmReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        loop {
            let rec = self.next_record(deadline)?;
            match self.step(rec)? {
                Step::Whole(rec) => {
                    buf.clear();
                    self.cons.append_to(&rec, buf);
                    self.release(&rec);
                    return Ok(());
                }
                Step::Assembled => {
                    std::mem::swap(buf, &mut self.partial);
                    self.partial.clear();
                    if self.partial.capacity() > KEEP_PARTIAL {
                        self.partial = Vec::new();
                    }
                    return Ok(());
                }
                Step::More => {}
            }
        }
    }

    /// In place: `f` reads the frame inside the ring (or the receiver's assembly buffer
    /// for a chunked frame), and the space is released when it returns.
    fn recv_with(
        &mut self,
        _scratch: &mut Vec<u8>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TransportError> {
        let frame = self.recv_in_place(deadline)?;
        f(&frame);
        Ok(())
    }

    fn lends_in_place(&self) -> bool {
        true
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        self.cons.close();
    }
}

/// A received frame read in place; see [`ShmReceiver::recv_in_place`]. Derefs to the
/// frame's bytes; dropping it releases them.
pub struct InPlaceFrame<'a> {
    rx: &'a mut ShmReceiver,
    /// The record in the ring, or `None` for a frame assembled in `rx.partial`.
    record: Option<Record>,
}

impl InPlaceFrame<'_> {
    /// Whether the bytes are the ring's own (no copy was made).
    pub fn is_in_ring(&self) -> bool {
        self.record.is_some()
    }
}

impl std::fmt::Debug for InPlaceFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlaceFrame")
            .field("len", &self.len())
            .field("in_ring", &self.is_in_ring())
            .finish()
    }
}

impl std::ops::Deref for InPlaceFrame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.record {
            #[cfg(not(loom))]
            Some(rec) => {
                let ptr = self.rx.cons.payload_ptr(rec);
                // SAFETY: the record lies inside the ring's data area (checked by `peek`
                // and `payload_ptr`), was published before we loaded `head` (Acquire),
                // and is not released until this guard drops: the sender, keeping to the
                // ring protocol, does not write there meanwhile. The guard borrows the
                // receiver mutably, so the slice cannot outlive the release.
                unsafe { std::slice::from_raw_parts(ptr, rec.len) }
            }
            #[cfg(loom)]
            Some(_) => &[],
            None => &self.rx.partial,
        }
    }
}

impl Drop for InPlaceFrame<'_> {
    fn drop(&mut self) {
        match self.record.take() {
            Some(rec) => self.rx.release(&rec),
            None => {
                self.rx.partial.clear();
                if self.rx.partial.capacity() > KEEP_PARTIAL {
                    self.rx.partial = Vec::new();
                }
            }
        }
    }
}

/// One side's two ends over a segment, before they are boxed into a [`Link`].
#[derive(Debug)]
pub struct ShmEnds {
    /// Writes this side's ring.
    pub sender: ShmSender,
    /// Reads the peer's ring (also in place: [`ShmReceiver::recv_in_place`]).
    pub receiver: ShmReceiver,
    /// The largest frame either direction accepts.
    pub max_frame: usize,
}

impl ShmEnds {
    /// Boxes the ends into the transport-neutral [`Link`].
    pub fn into_link(self) -> Link {
        Link {
            sender: Box::new(self.sender),
            receiver: Box::new(self.receiver),
            framing: Framing::LengthPrefixed,
            max_frame: self.max_frame,
        }
    }
}

/// Builds `side`'s ends over `seg`; `liveness` watches the peer process (one per end).
pub(crate) fn ends(
    seg: &Arc<Segment>,
    side: Side,
    liveness: impl Fn() -> Liveness,
    options: &ShmOptions,
    max_frame: usize,
) -> ShmEnds {
    let cap = seg.capacity();
    let (tx, rx) = (side.tx_ring(), side.rx_ring());
    let consumer_wait = std::mem::offset_of!(RingControl, consumer_wait);
    let producer_wait = std::mem::offset_of!(RingControl, producer_wait);
    let peer_side = match side {
        Side::Host => Side::Worker,
        Side::Worker => Side::Host,
    };
    let config = WaitConfig {
        strategy: options.wait,
        spin: options.spin,
        yield_for: options.yield_time,
        liveness: options.liveness_interval,
    };
    let words = |own_ring: usize, own_offset: usize| Words {
        own: seg.word(own_ring, own_offset),
        // The peer reads our tx ring and writes our rx ring.
        peer: [seg.word(tx, consumer_wait), seg.word(rx, producer_wait)],
        my_cpu: seg.cpu_word(side),
        peer_cpu: seg.cpu_word(peer_side),
    };
    let sender = ShmSender {
        prod: Producer::new(seg.control(tx), seg.data(tx), cap),
        ctl: seg.control(tx),
        waiter: Waiter::new(config, words(tx, producer_wait), liveness()),
        max_frame,
        send_timeout: options.send_timeout,
        abort_pending: false,
        sends: 0,
    };
    let receiver = ShmReceiver {
        cons: Consumer::new(seg.control(rx), seg.data(rx), cap),
        ctl: seg.control(rx),
        waiter: Waiter::new(config, words(rx, consumer_wait), liveness()),
        max_frame,
        partial: Vec::new(),
        state: Assembly::Idle,
    };
    ShmEnds {
        sender,
        receiver,
        max_frame,
    }
}
