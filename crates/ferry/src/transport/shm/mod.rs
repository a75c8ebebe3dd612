//! Shared-memory transport: two single-producer single-consumer byte rings (host to
//! worker, worker to host) in one anonymous segment the worker inherits.
//!
//! # Segment
//!
//! One `memfd_create` file (an unlinked temporary file on other Unix systems), sealed
//! against resizing and mapped `MAP_SHARED` by both processes. It has no name: kill -9 of
//! either side leaves nothing in `/dev/shm` or `/tmp`. The host passes the descriptor
//! number in `FERRY_SHM_FD` (see [`worker_ends`]). Layout (offsets in bytes; integers
//! little-endian, atomics in the machine's byte order, which is little-endian on every
//! platform ferry supports):
//!
//! ```text
//! 0                 header page (4096)
//!   0   magic "FERRYSHM"         24  u64 segment length
//!   8   u32 layout version (1)   32  u32 host pid
//!   12  u32 header size (4096)   128 u32 host CPU + 1    (hint, atomic)
//!   16  u64 ring capacity C      256 u32 worker CPU + 1  (hint, atomic)
//! 4096              ring 0 control page (host -> worker)
//!   0   u64 head            producer's position (bytes published, ever)
//!   128 u64 tail            consumer's position (bytes released, ever)
//!   256 u32 consumer_wait   consumer's futex word: 1 = sleeping, wake me
//!   384 u32 producer_wait   producer's futex word: 1 = sleeping, wake me
//!   512 u32 producer_closed 516 u32 consumer_closed
//! 8192              ring 0 data (C bytes, C a power of two)
//! 8192 + C          ring 1 control page (worker -> host)
//! 12288 + C         ring 1 data (C bytes)
//! ```
//!
//! Each control field sits on its own 128-byte line, so the producer's and the
//! consumer's writes never share a cache line (nor an adjacent-line prefetch pair).
//!
//! # Records
//!
//! A frame of up to `C/2 - 8` bytes is one record: `u32 len | u32 flags = 0 | bytes`,
//! padded to 8 bytes, never split at the end of the ring (a `PAD` record, flags 1, fills
//! the rest and the record starts at offset 0). Larger frames, up to `max_frame`, are
//! chunked: `FIRST` (flags 2, followed by the `u64` frame length) then `CONT` (flags 4)
//! records of at most `C/2` bytes each; `ABORT` (flags 8) drops a chunked frame cut off by
//! a sender's timeout. See `ring.rs` for the ordering of `head` and `tail`.
//!
//! # Waiting
//!
//! [`WaitStrategy::Adaptive`] (the default) spins only while the peer's futex words say it
//! is awake *and* it last ran on another CPU, yields while it is awake on ours, then sleeps
//! on a futex the other end wakes only when it sees the sleeping flag: publishing a frame
//! costs no system call while the peer is awake. See `wait.rs`.
//!
//! # Peer death
//!
//! Dropping an end sets its close flag and wakes the peer. A process that dies without
//! dropping is noticed through a pidfd of it (the host watches its child, the worker the
//! host from `FERRY_HOST_PID`): sleeps are cut into slices of
//! [`ShmOptions::liveness_interval`] and the peer is checked between two, so a wait ends
//! with [`TransportError::Disconnected`] within about twice that long (a look at the peer
//! costs system calls, so a wait about to sleep skips it when the last one is recent).
//!
//! # Example
//!
//! ```
//! use ferry::transport::shm::{self, ShmOptions};
//! use ferry::transport::{FrameReceiver, FrameSender};
//! let (mut host, mut worker) = shm::pair(&ShmOptions::default(), 1 << 20)?;
//! host.sender.send(&[b"hello ", b"worker"])?;
//! let mut buf = Vec::new();
//! worker.receiver.recv(&mut buf, None)?;
//! assert_eq!(buf, b"hello worker");
//! # Ok::<(), ferry::transport::TransportError>(())
//! ```

pub mod bare;
mod link;
pub(crate) mod liveness;
mod ring;
mod segment;
mod spawn;
mod sync;
mod wait;

#[cfg(all(test, loom))]
mod loom_tests;

pub use link::{InPlaceFrame, ShmEnds, ShmReceiver, ShmSender};
pub use spawn::{
    worker_ends, worker_link, FERRY_SHM_FD, FERRY_SHM_SPIN_US, FERRY_SHM_WAIT, FERRY_SHM_YIELD_US,
};
pub use wait::WaitStrategy;

pub(crate) use spawn::prepare;

use crate::transport::TransportError;
use segment::{normalize_capacity, Segment, Side};
use std::time::Duration;

/// Settings of the shm transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmOptions {
    /// Data bytes of each ring; rounded up to a power of two between 4 KiB and 1 GiB.
    /// Frames up to half of it travel as one record (readable in place); larger ones in
    /// chunks. Default 4 MiB (two rings: 8 MiB of shared memory per worker).
    pub capacity: usize,
    /// How a waiting end waits. Default [`WaitStrategy::Adaptive`].
    pub wait: WaitStrategy,
    /// Adaptive: the longest spin of one wait while the peer runs on another CPU, at first:
    /// it grows up to 20 times this while answers keep coming just after it, and shrinks
    /// back after slower ones.
    /// Default 50 µs.
    pub spin: Duration,
    /// Adaptive: the longest yielding after that while the peer is awake. Default 50 µs.
    pub yield_time: Duration,
    /// The longest single futex sleep; the peer process is checked between two, so twice
    /// this bounds how long a dead peer goes unnoticed. Default 20 ms.
    pub liveness_interval: Duration,
    /// How long `send` may wait for ring space before failing with
    /// [`TransportError::Timeout`]. Default `None`: it waits until the receiver makes room,
    /// closes or dies (backpressure; memory use is bounded by the ring either way).
    pub send_timeout: Option<Duration>,
}

impl Default for ShmOptions {
    fn default() -> Self {
        ShmOptions {
            capacity: 4 << 20,
            wait: WaitStrategy::Adaptive,
            spin: Duration::from_micros(50),
            yield_time: Duration::from_micros(50),
            liveness_interval: Duration::from_millis(20),
            send_timeout: None,
        }
    }
}

/// Builder methods for the settings most often changed; the others are fields.
///
/// ```
/// use ferry::transport::shm::{ShmOptions, WaitStrategy};
/// let options = ShmOptions::default().capacity(1 << 20).wait(WaitStrategy::Block);
/// assert_eq!(options.capacity, 1 << 20);
/// ```
impl ShmOptions {
    /// Sets [`capacity`](Self::capacity).
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Sets [`wait`](Self::wait).
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Sets [`send_timeout`](Self::send_timeout).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }
}

/// Two connected ends in this process over one segment (host side, worker side), for
/// tests, benchmarks and in-process use. Both live in this process, so only the close
/// flags tell one that the other is gone.
pub fn pair(options: &ShmOptions, max_frame: usize) -> Result<(ShmEnds, ShmEnds), TransportError> {
    let (segment, _fd) = Segment::create(normalize_capacity(options.capacity))?;
    let none = liveness::Liveness::none;
    Ok((
        link::ends(&segment, Side::Host, none, options, max_frame),
        link::ends(&segment, Side::Worker, none, options, max_frame),
    ))
}
