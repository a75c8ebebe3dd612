//! One single-producer single-consumer byte ring of variable-length records.
//!
//! The algorithm is the classic Lamport/"FastForward"-style SPSC ring with free-running
//! 64-bit positions: the producer alone writes `head`, the consumer alone writes `tail`,
//! both count bytes since the ring was created and never wrap in practice (2^64 bytes).
//! `head - tail` is the number of bytes published and not yet released, never more than
//! the capacity; a position's offset in the data area is `pos & (capacity - 1)`.
//!
//! **Records.** Every record starts at an 8-aligned offset with an 8-byte header,
//! `u32 len | u32 flags` (little-endian), and occupies `align8(header + len)` bytes. A
//! record never wraps: when it does not fit before the end of the data area, the producer
//! writes a `PAD` header there and places the record at offset 0; the consumer skips from a
//! `PAD` to the start. Frames up to [`max_record`] bytes travel as one record (flags 0), so
//! a receiver can read one in place. Larger frames are chunked: a `FIRST` record whose
//! header is followed by a `u64` total frame length, then `CONT` records, until the total
//! is reached. `ABORT` tells the consumer to drop a partly received chunked frame (a
//! sender that timed out in the middle of one).
//!
//! **Ordering.** The producer writes a record's bytes, then stores `head` with `Release`;
//! the consumer loads `head` with `Acquire` before reading them. The consumer stores
//! `tail` with `Release` after it has read a record; the producer loads `tail` with
//! `Acquire` before overwriting that space. Wake-ups (see `wait.rs`) add a `SeqCst`
//! fence after each of those stores.

use super::sync::{fence, AtomicU32, AtomicU64, CachePadded, Ordering, Shared};
use crate::transport::TransportError;

/// Size of a record header: `u32 len | u32 flags`.
pub(crate) const HEADER: usize = 8;
/// Size of the header of a `FIRST` chunk: the header plus the `u64` total frame length.
pub(crate) const FIRST_HEADER: usize = 16;

/// Record flag: padding up to the end of the data area; the next record is at offset 0.
pub(crate) const PAD: u32 = 1;
/// Record flag: the first chunk of a frame larger than one record.
pub(crate) const FIRST: u32 = 2;
/// Record flag: a later chunk of that frame.
pub(crate) const CONT: u32 = 4;
/// Record flag: the chunked frame in progress is abandoned; drop what arrived of it.
pub(crate) const ABORT: u32 = 8;

/// The futex word value of an end that is awake.
pub(crate) const AWAKE: u32 = 0;
/// The futex word value of an end that is going to sleep, or sleeping: wake it.
pub(crate) const SLEEPING: u32 = 1;

/// Rounds `n` up to a multiple of 8.
pub(crate) const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The largest record a ring of `capacity` bytes carries: half of it. A record of at most
/// half the ring always fits once the ring is empty, padding included, so the producer
/// can always make progress.
pub(crate) const fn max_record(capacity: usize) -> usize {
    capacity / 2
}

/// The largest frame sent as a single record (readable in place).
pub(crate) const fn max_whole_frame(capacity: usize) -> usize {
    max_record(capacity) - HEADER
}

/// The control block of one ring, at the start of its 4 KiB control page. Every field is
/// on its own 128-byte line; `#[repr(C)]` fixes the offsets documented in `mod.rs`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RingControl {
    /// Bytes published by the producer (offset 0). Written only by the producer.
    pub(crate) head: CachePadded<AtomicU64>,
    /// Bytes released by the consumer (offset 128). Written only by the consumer.
    pub(crate) tail: CachePadded<AtomicU64>,
    /// The consumer's futex word (offset 256): [`SLEEPING`] while it sleeps for data.
    pub(crate) consumer_wait: CachePadded<AtomicU32>,
    /// The producer's futex word (offset 384): [`SLEEPING`] while it sleeps for space.
    pub(crate) producer_wait: CachePadded<AtomicU32>,
    /// Close flags (offset 512): producer closed, consumer closed (offset 516).
    pub(crate) closed: CachePadded<CloseFlags>,
}

/// The two close flags of a ring, each set once to 1 by its own end when dropped.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CloseFlags {
    /// Set by the producer when it is dropped.
    pub(crate) producer: AtomicU32,
    /// Set by the consumer when it is dropped.
    pub(crate) consumer: AtomicU32,
}

/// The data area of one ring.
#[cfg(not(loom))]
pub(crate) struct RingData {
    base: std::ptr::NonNull<u8>,
    cap: usize,
}

#[cfg(not(loom))]
impl RingData {
    /// # Safety
    /// `base..base + cap` must stay mapped while this value is used (the caller keeps the
    /// segment alive next to it), and be accessed by this process only through the ring's
    /// producer and consumer.
    pub(crate) unsafe fn new(base: std::ptr::NonNull<u8>, cap: usize) -> Self {
        RingData { base, cap }
    }

    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        assert!(off <= self.cap && src.len() <= self.cap - off);
        // SAFETY: in bounds (checked above); the producer only writes space it has
        // claimed (between head and tail + capacity), which the consumer does not read
        // until `head` is published with Release. `src` is process memory, not the ring,
        // so the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(off), src.len())
        }
    }

    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        assert!(off <= self.cap && dst.len() <= self.cap - off);
        // SAFETY: in bounds (checked above); the consumer only reads published, unreleased
        // bytes, which the producer does not touch until `tail` moves past them. `dst` is
        // process memory, not the ring.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        }
    }

    /// Points at `len` bytes at `off` (bounds checked), for reading in place.
    pub(crate) fn ptr(&self, off: usize, len: usize) -> *const u8 {
        assert!(off <= self.cap && len <= self.cap - off);
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.base.as_ptr().add(off) }
    }
}

/// The data area of one ring, modelled under loom with one tracked cell per byte so that
/// loom reports a read that is not ordered after the write it depends on.
#[cfg(loom)]
pub(crate) struct RingData {
    cells: std::sync::Arc<Cells>,
    cap: usize,
}

/// The modelled bytes.
#[cfg(loom)]
struct Cells(Box<[loom::cell::UnsafeCell<u8>]>);

// SAFETY: every access goes through loom's `with`/`with_mut`, which detect (and fail the
// model on) any access not ordered by the ring protocol; that is the point of the model.
#[cfg(loom)]
unsafe impl Sync for Cells {}
// SAFETY: as above.
#[cfg(loom)]
unsafe impl Send for Cells {}

#[cfg(loom)]
impl RingData {
    pub(crate) fn model(cap: usize) -> Self {
        RingData {
            cells: std::sync::Arc::new(Cells(
                (0..cap).map(|_| loom::cell::UnsafeCell::new(0)).collect(),
            )),
            cap,
        }
    }

    /// Another handle on the same modelled bytes (the other end's view).
    pub(crate) fn share(&self) -> Self {
        RingData {
            cells: self.cells.clone(),
            cap: self.cap,
        }
    }

    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        assert!(off + src.len() <= self.cap);
        for (i, b) in src.iter().enumerate() {
            // SAFETY: loom checks this access against concurrent ones.
            self.cells.0[off + i].with_mut(|p| unsafe { *p = *b });
        }
    }

    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        assert!(off + dst.len() <= self.cap);
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: loom checks this access against concurrent ones.
            *b = self.cells.0[off + i].with(|p| unsafe { *p });
        }
    }
}

// SAFETY: `RingData` is a pointer into the shared mapping; which thread uses it does not
// matter, what matters is that one producer and one consumer follow the ring protocol,
// which `Producer`/`Consumer` (each owned by one end, `&mut` to use) guarantee.
#[cfg(not(loom))]
unsafe impl Send for RingData {}

/// A record header as read from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// `0`, [`FIRST`], [`CONT`] or [`ABORT`] (`PAD` is skipped by the consumer).
    pub(crate) flags: u32,
    /// Payload bytes in this record.
    pub(crate) len: usize,
    /// For `FIRST`: the whole frame's length.
    pub(crate) total: u64,
    /// Offset of the payload in the data area.
    pub(crate) payload: usize,
    /// The position just after this record (what `release` publishes).
    pub(crate) end: u64,
}

fn corrupt(what: &'static str) -> TransportError {
    tracing::error!(what, "shared-memory ring corrupted");
    TransportError::InvalidFrame(what)
}

/// The producing end of a ring.
pub(crate) struct Producer {
    ctl: Shared<RingControl>,
    data: RingData,
    cap: usize,
    /// Our own `head`: we are its only writer.
    head: u64,
    /// The last `tail` we loaded; `tail` only grows, so free space is at least what this says.
    cached_tail: u64,
    /// Bytes claimed by `claim` (padding included), published by `commit`.
    claimed: usize,
}

impl Producer {
    /// The producer of the ring `ctl` with data `data` of `cap` bytes (a power of two).
    pub(crate) fn new(ctl: Shared<RingControl>, data: RingData, cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        // SYNC POINT: Acquire pairs with the consumer's Release store of `tail` (a producer
        // attaching to a ring in use resumes where it stands; fresh rings hold 0).
        let tail = ctl.tail.load(Ordering::Acquire);
        let head = ctl.head.load(Ordering::Relaxed);
        Producer {
            ctl,
            data,
            cap,
            head,
            cached_tail: tail,
            claimed: 0,
        }
    }

    /// The ring's control block.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn control(&self) -> &RingControl {
        &self.ctl
    }

    /// The data capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    fn refresh_tail(&mut self) -> Result<(), TransportError> {
        // SYNC POINT: Acquire pairs with the consumer's Release store of `tail` in
        // `Consumer::release`: its reads of the space it released happen before our
        // writes into that space.
        let tail = self.ctl.tail.load(Ordering::Acquire);
        if tail < self.cached_tail || tail > self.head {
            return Err(corrupt("shm ring tail out of range"));
        }
        self.cached_tail = tail;
        Ok(())
    }

    /// The bytes a record of `size` bytes (a multiple of 8, at most [`max_record`]) needs
    /// now, padding to the end of the data area included.
    fn needed(&self, size: usize) -> usize {
        let off = (self.head as usize) & (self.cap - 1);
        let contiguous = self.cap - off;
        if size <= contiguous {
            size
        } else {
            contiguous + size
        }
    }

    /// Bytes from the next record's offset to the end of the data area.
    pub(crate) fn contiguous(&self) -> usize {
        self.cap - ((self.head as usize) & (self.cap - 1))
    }

    /// Whether a record of `size` bytes can be claimed now.
    pub(crate) fn has_space(&mut self, size: usize) -> Result<bool, TransportError> {
        let need = self.needed(size) as u64;
        let free = |p: &Self| p.cap as u64 - (p.head - p.cached_tail);
        if free(self) >= need {
            return Ok(true);
        }
        self.refresh_tail()?;
        Ok(free(self) >= need)
    }

    /// Claims the space of the next record of `size` bytes and returns its offset in the
    /// data area, writing a `PAD` record first if it must start over at offset 0. `None`
    /// when there is not enough free space yet. Nothing is visible before [`commit`].
    ///
    /// [`commit`]: Producer::commit
    pub(crate) fn claim(&mut self, size: usize) -> Result<Option<usize>, TransportError> {
        debug_assert!(size % 8 == 0 && size <= max_record(self.cap) && self.claimed == 0);
        if !self.has_space(size)? {
            return Ok(None);
        }
        let off = (self.head as usize) & (self.cap - 1);
        let contiguous = self.cap - off;
        if size <= contiguous {
            self.claimed = size;
            return Ok(Some(off));
        }
        // `off` is 8-aligned and below `cap`, so at least a header fits before the end.
        self.write_header(off, (contiguous - HEADER) as u32, PAD);
        self.claimed = contiguous + size;
        Ok(Some(0))
    }

    /// Writes a record header at `off`.
    pub(crate) fn write_header(&mut self, off: usize, len: u32, flags: u32) {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&flags.to_le_bytes());
        self.data.write(off, &h);
    }

    /// Writes `bytes` at `off` inside the claimed record.
    pub(crate) fn write(&mut self, off: usize, bytes: &[u8]) {
        self.data.write(off, bytes);
    }

    /// Publishes the claimed record. Returns whether the consumer is asleep and must be
    /// woken ([`wake_consumer`](Producer::wake_consumer)).
    pub(crate) fn commit(&mut self) -> bool {
        self.head += self.claimed as u64;
        self.claimed = 0;
        // SYNC POINT: Release pairs with the consumer's Acquire load of `head` in
        // `Consumer::refresh_head`: the record's bytes written above are visible to it.
        self.ctl.head.store(self.head, Ordering::Release);
        // SYNC POINT: SeqCst fence pairs with the one in `wait::Waiter::sleep` (Dekker):
        // either the consumer, after announcing SLEEPING, sees this `head`, or we see its
        // SLEEPING below and wake it. Never both miss.
        fence(Ordering::SeqCst);
        self.ctl.consumer_wait.load(Ordering::Relaxed) == SLEEPING
    }

    /// Wakes the consumer (after `commit` said it sleeps).
    pub(crate) fn wake_consumer(&self) {
        super::wait::wake(&self.ctl.consumer_wait);
    }

    /// Marks the producer closed and wakes the consumer.
    pub(crate) fn close(&mut self) {
        // SYNC POINT: Release pairs with the consumer's Acquire load in
        // `link::producer_closed`; every record published before is visible with it.
        self.ctl.closed.producer.store(1, Ordering::Release);
        // SYNC POINT: SeqCst fence pairs with the sleeper's fence (see `commit`).
        fence(Ordering::SeqCst);
        if self.ctl.consumer_wait.load(Ordering::Relaxed) == SLEEPING {
            self.wake_consumer();
        }
    }
}

/// The consuming end of a ring.
pub(crate) struct Consumer {
    ctl: Shared<RingControl>,
    data: RingData,
    cap: usize,
    /// Our own read position (may run ahead of the published `tail` by skipped padding).
    tail: u64,
    /// The last `head` we loaded.
    cached_head: u64,
}

impl Consumer {
    /// The consumer of the ring `ctl` with data `data` of `cap` bytes (a power of two).
    pub(crate) fn new(ctl: Shared<RingControl>, data: RingData, cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        let tail = ctl.tail.load(Ordering::Relaxed);
        Consumer {
            ctl,
            data,
            cap,
            tail,
            cached_head: tail,
        }
    }

    fn refresh_head(&mut self) -> Result<(), TransportError> {
        // SYNC POINT: Acquire pairs with the producer's Release store of `head` in
        // `Producer::commit`: the bytes of every record below it are visible.
        let head = self.ctl.head.load(Ordering::Acquire);
        if head < self.cached_head || head - self.tail > self.cap as u64 {
            return Err(corrupt("shm ring head out of range"));
        }
        self.cached_head = head;
        Ok(())
    }

    fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.data.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// The next record, skipping padding, or `None` when nothing is published. The record
    /// stays in the ring until [`release`](Consumer::release).
    pub(crate) fn peek(&mut self) -> Result<Option<Record>, TransportError> {
        loop {
            if self.tail == self.cached_head {
                self.refresh_head()?;
                if self.tail == self.cached_head {
                    return Ok(None);
                }
            }
            let off = (self.tail as usize) & (self.cap - 1);
            let contiguous = self.cap - off;
            let published = (self.cached_head - self.tail) as usize;
            if published < HEADER {
                return Err(corrupt("shm ring record header cut"));
            }
            let len = self.read_u32(off) as usize;
            let flags = self.read_u32(off + 4);
            if flags == PAD {
                if contiguous > published {
                    return Err(corrupt("shm ring padding past head"));
                }
                // Skipped locally; the space is released with the next record.
                self.tail += contiguous as u64;
                continue;
            }
            let header = if flags == FIRST { FIRST_HEADER } else { HEADER };
            let size = align8(header + len);
            if !matches!(flags, 0 | FIRST | CONT | ABORT)
                || size > contiguous
                || size > published
                || size > max_record(self.cap)
            {
                return Err(corrupt("shm ring record header invalid"));
            }
            let total = if flags == FIRST {
                let mut b = [0u8; 8];
                self.data.read(off + HEADER, &mut b);
                u64::from_le_bytes(b)
            } else {
                len as u64
            };
            return Ok(Some(Record {
                flags,
                len,
                total,
                payload: off + header,
                end: self.tail + size as u64,
            }));
        }
    }

    /// Copies `dst.len()` payload bytes of `record` from `from` on into `dst`.
    #[cfg(loom)]
    pub(crate) fn read(&self, record: &Record, from: usize, dst: &mut [u8]) {
        assert!(from + dst.len() <= record.len);
        self.data.read(record.payload + from, dst);
    }

    /// Copies the whole payload of `record` onto the end of `out`.
    #[cfg(loom)]
    pub(crate) fn append_to(&self, record: &Record, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + record.len, 0);
        self.read(record, 0, &mut out[start..]);
    }

    /// Copies the whole payload of `record` onto the end of `out` (one copy, no zeroing).
    #[cfg(not(loom))]
    pub(crate) fn append_to(&self, record: &Record, out: &mut Vec<u8>) {
        let ptr = self.payload_ptr(record);
        // SAFETY: the payload lies inside the data area (`payload_ptr` checks it), was
        // published before we loaded `head` (Acquire), and stays unreleased during the copy.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, record.len) });
    }

    /// Points at the payload of `record`, for reading in place until it is released.
    #[cfg(not(loom))]
    pub(crate) fn payload_ptr(&self, record: &Record) -> *const u8 {
        self.data.ptr(record.payload, record.len)
    }

    /// Releases everything up to the end of `record` to the producer. Returns whether the
    /// producer is asleep waiting for space and must be woken.
    pub(crate) fn release(&mut self, record: &Record) -> bool {
        debug_assert!(record.end > self.tail && record.end <= self.cached_head);
        self.tail = record.end;
        // SYNC POINT: Release pairs with the producer's Acquire load of `tail` in
        // `Producer::refresh_tail`: our reads of this space happen before it is rewritten.
        self.ctl.tail.store(self.tail, Ordering::Release);
        // SYNC POINT: SeqCst fence pairs with the producer's sleep fence in
        // `wait::Waiter::sleep` (Dekker, as in `Producer::commit`).
        fence(Ordering::SeqCst);
        self.ctl.producer_wait.load(Ordering::Relaxed) == SLEEPING
    }

    /// Wakes the producer (after `release` said it sleeps).
    pub(crate) fn wake_producer(&self) {
        super::wait::wake(&self.ctl.producer_wait);
    }

    /// Marks the consumer closed and wakes the producer.
    pub(crate) fn close(&mut self) {
        // SYNC POINT: Release pairs with the Acquire load in `link::consumer_closed`.
        self.ctl.closed.consumer.store(1, Ordering::Release);
        // SYNC POINT: SeqCst fence pairs with the sleeper's fence (see `release`).
        fence(Ordering::SeqCst);
        if self.ctl.producer_wait.load(Ordering::Relaxed) == SLEEPING {
            self.wake_producer();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A ring in ordinary heap memory, both ends in this thread.
    fn heap_ring(cap: usize) -> (Producer, Consumer) {
        struct Block {
            ctl: Box<RingControl>,
            data: Box<[std::cell::UnsafeCell<u8>]>,
        }
        // SAFETY: the block is only reached through the ring ends, which follow the
        // SPSC protocol; the test uses both from one thread.
        unsafe impl Sync for Block {}
        // SAFETY: as above.
        unsafe impl Send for Block {}
        let block = Arc::new(Block {
            ctl: Box::default(),
            data: (0..cap).map(|_| std::cell::UnsafeCell::new(0)).collect(),
        });
        let ctl = std::ptr::NonNull::from(&*block.ctl);
        let base = std::ptr::NonNull::new(block.data.as_ptr() as *mut u8).unwrap();
        let owner: Arc<dyn std::any::Any + Send + Sync> = block;
        // SAFETY: both pointers are into `owner`'s heap blocks, which it keeps in place.
        let (c1, c2, d1, d2) = unsafe {
            (
                Shared::new(ctl, owner.clone()),
                Shared::new(ctl, owner),
                RingData::new(base, cap),
                RingData::new(base, cap),
            )
        };
        (Producer::new(c1, d1, cap), Consumer::new(c2, d2, cap))
    }

    fn put(p: &mut Producer, payload: &[u8]) -> bool {
        let size = align8(HEADER + payload.len());
        match p.claim(size).unwrap() {
            None => false,
            Some(off) => {
                p.write_header(off, payload.len() as u32, 0);
                p.write(off + HEADER, payload);
                p.commit();
                true
            }
        }
    }

    fn take(c: &mut Consumer) -> Option<Vec<u8>> {
        let rec = c.peek().unwrap()?;
        let mut out = Vec::new();
        c.append_to(&rec, &mut out);
        c.release(&rec);
        Some(out)
    }

    #[test]
    fn ring_records_wrap_with_padding() {
        let (mut p, mut c) = heap_ring(128);
        // 40-byte records (8 + 29 padded to 40): the fourth one does not fit before the end.
        for round in 0..50u8 {
            let msg = vec![round; 29];
            assert!(put(&mut p, &msg));
            assert_eq!(take(&mut c).unwrap(), msg);
        }
        assert!(take(&mut c).is_none());
    }

    #[test]
    fn ring_full_refuses_until_released() {
        let (mut p, mut c) = heap_ring(128);
        assert!(put(&mut p, &[1; 56]));
        assert!(put(&mut p, &[2; 56]));
        assert!(!put(&mut p, &[3; 1]), "ring is full");
        assert_eq!(take(&mut c).unwrap(), [1; 56]);
        assert!(put(&mut p, &[3; 1]));
        assert_eq!(take(&mut c).unwrap(), [2; 56]);
        assert_eq!(take(&mut c).unwrap(), [3; 1]);
    }

    #[test]
    fn ring_record_ending_exactly_at_the_end_needs_no_padding() {
        let (mut p, mut c) = heap_ring(128);
        assert!(put(&mut p, &[1; 56])); // 64 bytes
        assert_eq!(take(&mut c).unwrap(), [1; 56]);
        assert!(put(&mut p, &[2; 56])); // ends exactly at 128
        assert_eq!(take(&mut c).unwrap(), [2; 56]);
        assert!(put(&mut p, &[3; 56])); // starts at 0 again
        assert_eq!(take(&mut c).unwrap(), [3; 56]);
    }

    #[test]
    fn ring_corrupt_head_is_an_error_not_a_read_out_of_bounds() {
        let (p, mut c) = heap_ring(128);
        p.control().head.store(1 << 40, Ordering::Release);
        assert!(c.peek().is_err());
    }
}
