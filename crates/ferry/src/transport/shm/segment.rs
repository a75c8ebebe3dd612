//! The shared segment: an anonymous memory file holding a header page and two rings.
//!
//! Created with `memfd_create` on Linux (sealed against resizing, so a peer cannot shrink
//! it under us and turn our reads into `SIGBUS`), or as an unlinked temporary file on other
//! Unix systems. It has no name anywhere: when the last process holding it exits, it is
//! gone. The layout is documented in `mod.rs` and `docs/protocol.md`.

use super::ring::{RingControl, RingData};
use super::sync::{AtomicU32, CachePadded, Shared};
use crate::transport::TransportError;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// The first 8 bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"FERRYSHM";
/// The layout version this build writes and reads.
pub(crate) const LAYOUT_VERSION: u32 = 1;
/// Size of the header page and of each ring's control page.
pub(crate) const PAGE: usize = 4096;
/// The smallest ring capacity accepted.
pub(crate) const MIN_CAPACITY: usize = 4096;
/// The largest ring capacity accepted (record lengths are `u32`).
pub(crate) const MAX_CAPACITY: usize = 1 << 30;

/// The header page's fields. The first five are written once by the creator and only read
/// afterwards; the CPU words are hints each side updates.
#[repr(C)]
pub(crate) struct SegmentHeader {
    /// `FERRYSHM` (offset 0).
    magic: [u8; 8],
    /// [`LAYOUT_VERSION`] (offset 8).
    version: u32,
    /// Bytes before the first ring: [`PAGE`] (offset 12).
    header_size: u32,
    /// Data bytes of each ring, a power of two (offset 16).
    capacity: u64,
    /// Total segment length (offset 24).
    segment_len: u64,
    /// The creating (host) process (offset 32); 0 when unknown.
    host_pid: u32,
    _reserved: u32,
    _pad: [u8; 88],
    /// The CPU the host side last ran a wait on, plus one; 0 = unknown (offset 128).
    pub(crate) host_cpu: CachePadded<AtomicU32>,
    /// The same for the worker side (offset 256).
    pub(crate) worker_cpu: CachePadded<AtomicU32>,
}

const _: () = {
    assert!(std::mem::offset_of!(SegmentHeader, capacity) == 16);
    assert!(std::mem::offset_of!(SegmentHeader, host_pid) == 32);
    assert!(std::mem::size_of::<SegmentHeader>() <= PAGE);
    assert!(std::mem::size_of::<RingControl>() <= PAGE);
};
#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::offset_of!(SegmentHeader, host_cpu) == 128);
    assert!(std::mem::offset_of!(SegmentHeader, worker_cpu) == 256);
    assert!(std::mem::offset_of!(RingControl, tail) == 128);
    assert!(std::mem::offset_of!(RingControl, consumer_wait) == 256);
    assert!(std::mem::offset_of!(RingControl, producer_wait) == 384);
    assert!(std::mem::offset_of!(RingControl, closed) == 512);
};

/// Which end of the link a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Produces ring 0 (host to worker), consumes ring 1.
    Host,
    /// Produces ring 1 (worker to host), consumes ring 0.
    Worker,
}

impl Side {
    /// The ring this side writes.
    pub(crate) fn tx_ring(self) -> usize {
        match self {
            Side::Host => 0,
            Side::Worker => 1,
        }
    }

    /// The ring this side reads.
    pub(crate) fn rx_ring(self) -> usize {
        1 - self.tx_ring()
    }
}

/// Total length of a segment whose rings hold `capacity` bytes each.
pub(crate) const fn segment_len(capacity: usize) -> usize {
    PAGE + 2 * (PAGE + capacity)
}

/// Rounds a requested ring capacity to what the layout accepts.
pub(crate) fn normalize_capacity(requested: usize) -> usize {
    requested
        .clamp(MIN_CAPACITY, MAX_CAPACITY)
        .checked_next_power_of_two()
        .unwrap_or(MAX_CAPACITY)
        .min(MAX_CAPACITY)
}

/// One mapped segment.
pub(crate) struct Segment {
    map: memmap2::MmapRaw,
    capacity: usize,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn io(e: rustix::io::Errno) -> TransportError {
    TransportError::Io(e.into())
}

impl Segment {
    /// Creates a fresh segment with rings of `capacity` bytes (already normalized) and
    /// returns it with its file descriptor (close-on-exec).
    pub(crate) fn create(capacity: usize) -> Result<(Arc<Segment>, OwnedFd), TransportError> {
        debug_assert_eq!(capacity, normalize_capacity(capacity));
        let len = segment_len(capacity);
        let fd = anonymous_file(len)?;
        let map = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&std::fs::File::from(fd.try_clone()?))?;
        let mut fixed = [0u8; 40];
        fixed[..8].copy_from_slice(&MAGIC);
        fixed[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        fixed[12..16].copy_from_slice(&(PAGE as u32).to_le_bytes());
        fixed[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
        fixed[24..32].copy_from_slice(&(len as u64).to_le_bytes());
        fixed[32..36].copy_from_slice(&std::process::id().to_le_bytes());
        // SAFETY: the mapping is `len >= PAGE` bytes, writable, and not yet shared with any
        // other process or thread; the kernel zeroed the rest (all atomics start at 0).
        unsafe { std::ptr::copy_nonoverlapping(fixed.as_ptr(), map.as_mut_ptr(), fixed.len()) };
        Ok((Arc::new(Segment { map, capacity }), fd))
    }

    /// Maps a segment another process created, checking its header.
    pub(crate) fn attach(fd: BorrowedFd<'_>) -> Result<Arc<Segment>, TransportError> {
        let bad = TransportError::CorruptSegment;
        let file_len = rustix::fs::fstat(fd).map_err(io)?.st_size as u64;
        if file_len < PAGE as u64 {
            return Err(bad(format!("{file_len} bytes is too small")));
        }
        let map = memmap2::MmapOptions::new()
            .len(file_len as usize)
            .populate()
            .map_raw(&fd)?;
        let mut fixed = [0u8; 40];
        // SAFETY: the mapping has at least PAGE bytes (checked above); these bytes are
        // written once by the creator before the descriptor was handed to us.
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), fixed.as_mut_ptr(), fixed.len()) };
        let u32_at = |o: usize| u32::from_le_bytes(fixed[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(fixed[o..o + 8].try_into().unwrap_or([0; 8]));
        if fixed[..8] != MAGIC {
            return Err(bad("bad magic (not a ferry segment)".into()));
        }
        let version = u32_at(8);
        if version != LAYOUT_VERSION {
            return Err(bad(format!(
                "layout version {version}, this build reads {LAYOUT_VERSION}"
            )));
        }
        let capacity = u64_at(16) as usize;
        if u32_at(12) as usize != PAGE
            || capacity != normalize_capacity(capacity)
            || u64_at(24) != segment_len(capacity) as u64
            || file_len < segment_len(capacity) as u64
        {
            return Err(bad(format!(
                "inconsistent header (capacity {capacity}, file {file_len} bytes)"
            )));
        }
        Ok(Arc::new(Segment { map, capacity }))
    }

    /// Data bytes of each ring.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn at<T>(self: &Arc<Self>, offset: usize) -> Shared<T> {
        assert!(offset + std::mem::size_of::<T>() <= self.map.len());
        assert!(offset % std::mem::align_of::<T>() == 0);
        // SAFETY: in bounds (checked above) of a page-aligned mapping, so `offset`-aligned
        // is `T`-aligned; only called for the atomics-only structs of the layout, which
        // start zeroed (a valid value) and are only ever accessed through shared refs.
        unsafe {
            let ptr = NonNull::new_unchecked(self.map.as_mut_ptr().add(offset).cast::<T>());
            Shared::new(ptr, self.clone())
        }
    }

    /// The header's CPU word of `side`.
    pub(crate) fn cpu_word(self: &Arc<Self>, side: Side) -> Shared<AtomicU32> {
        let off = match side {
            Side::Host => std::mem::offset_of!(SegmentHeader, host_cpu),
            Side::Worker => std::mem::offset_of!(SegmentHeader, worker_cpu),
        };
        self.at(off)
    }

    fn ring_offset(&self, ring: usize) -> usize {
        PAGE + ring * (PAGE + self.capacity)
    }

    /// The control block of ring `ring` (0 or 1).
    pub(crate) fn control(self: &Arc<Self>, ring: usize) -> Shared<RingControl> {
        self.at(self.ring_offset(ring))
    }

    /// A futex word of ring `ring`'s control block, at `offset` in it.
    pub(crate) fn word(self: &Arc<Self>, ring: usize, offset: usize) -> Shared<AtomicU32> {
        self.at(self.ring_offset(ring) + offset)
    }

    /// The data area of ring `ring`.
    #[cfg(not(loom))]
    pub(crate) fn data(&self, ring: usize) -> RingData {
        let off = self.ring_offset(ring) + PAGE;
        assert!(off + self.capacity <= self.map.len());
        // SAFETY: in bounds (checked above); the `RingData` is stored next to a
        // `Shared` of this segment in the producer or consumer, which keeps it mapped.
        unsafe {
            RingData::new(
                NonNull::new_unchecked(self.map.as_mut_ptr().add(off)),
                self.capacity,
            )
        }
    }

    /// Under loom the segment is never used; the models build rings on the heap.
    #[cfg(loom)]
    pub(crate) fn data(&self, _ring: usize) -> RingData {
        RingData::model(self.capacity)
    }
}

/// An anonymous file of `len` bytes with no name on any file system.
#[cfg(target_os = "linux")]
fn anonymous_file(len: usize) -> Result<OwnedFd, TransportError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("ferry-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(io)?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(io)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(io)?;
    Ok(fd)
}

/// An anonymous file of `len` bytes: a temporary file unlinked as soon as it is open.
#[cfg(not(target_os = "linux"))]
fn anonymous_file(len: usize) -> Result<OwnedFd, TransportError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            ".ferry-shm-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                let _ = std::fs::remove_file(&path);
                file.set_len(len as u64)?;
                return Ok(file.into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(TransportError::Internal(
        "could not create a temporary shm file (every name taken)".into(),
    ))
}
