//! The bare spinning ring: the floor the shm transport's figures are a ratio to.
//!
//! The same segment (`memfd`, header page, two rings), but none of the engine: fixed-size
//! messages as `u64 length | bytes` padded to 8 (bytes may wrap around the end), both ends
//! busy-poll with `pause`, no wait strategy, no liveness, no frames, no codec. It is what
//! `../shared/floor/shm_ring.h` does, in Rust. Used by `ferry floor shm-echo` and
//! `ferry_bench::floor::ShmFloor` (the benchmark crate).

use super::ring::{align8, RingControl, RingData};
use super::segment::{normalize_capacity, Segment};
use super::spawn::FERRY_SHM_FD;
use super::sync::{spin_hint, Ordering, Shared};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// One direction of the bare ring.
struct End {
    ctl: Shared<RingControl>,
    data: RingData,
    cap: usize,
    pos: u64,
}

impl End {
    fn new(seg: &Arc<Segment>, ring: usize) -> End {
        End {
            ctl: seg.control(ring),
            data: seg.data(ring),
            cap: seg.capacity(),
            pos: 0,
        }
    }

    fn write_wrapping(&self, off: usize, bytes: &[u8]) {
        let first = bytes.len().min(self.cap - off);
        self.data.write(off, &bytes[..first]);
        self.data.write(0, &bytes[first..]);
    }

    fn read_wrapping(&self, off: usize, out: &mut [u8]) {
        let first = out.len().min(self.cap - off);
        let (a, b) = out.split_at_mut(first);
        self.data.read(off, a);
        self.data.read(0, b);
    }

    fn send(&mut self, msg: &[u8]) {
        let need = (8 + align8(msg.len())) as u64;
        // SYNC POINT: Acquire pairs with the receiver's Release store of `tail` below.
        while self.pos + need - self.ctl.tail.load(Ordering::Acquire) > self.cap as u64 {
            spin_hint();
        }
        let off = (self.pos as usize) & (self.cap - 1);
        self.write_wrapping(off, &(msg.len() as u64).to_le_bytes());
        self.write_wrapping((off + 8) & (self.cap - 1), msg);
        self.pos += need;
        // SYNC POINT: Release pairs with the receiver's Acquire load of `head` below.
        self.ctl.head.store(self.pos, Ordering::Release);
    }

    /// Receives into `buf` (resized to the message); `false` on the stop message or when
    /// `stop()` says so while waiting.
    fn recv(&mut self, buf: &mut Vec<u8>, stop: &mut dyn FnMut() -> bool) -> bool {
        let mut spins = 0u32;
        // SYNC POINT: Acquire pairs with the sender's Release store of `head` above.
        while self.ctl.head.load(Ordering::Acquire) == self.pos {
            spin_hint();
            spins = spins.wrapping_add(1);
            if spins % (1 << 20) == 0 && stop() {
                return false;
            }
        }
        let off = (self.pos as usize) & (self.cap - 1);
        let mut len = [0u8; 8];
        self.read_wrapping(off, &mut len);
        let len = u64::from_le_bytes(len) as usize;
        if len == 0 || len > self.cap / 2 {
            return false;
        }
        buf.resize(len, 0);
        self.read_wrapping((off + 8) & (self.cap - 1), buf);
        self.pos += (8 + align8(len)) as u64;
        // SYNC POINT: Release pairs with the sender's Acquire load of `tail` above.
        self.ctl.tail.store(self.pos, Ordering::Release);
        true
    }
}

/// The host side of the bare ring ping-pong with a child running [`echo`].
pub struct BareHost {
    child: Child,
    tx: End,
    rx: End,
    buf: Vec<u8>,
}

impl std::fmt::Debug for BareHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareHost")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl BareHost {
    /// Starts `program args...` (a peer running [`echo`]) with a segment whose rings hold
    /// `capacity` bytes (at least twice the message size is needed).
    pub fn spawn(program: &str, args: &[&str], capacity: usize) -> io::Result<BareHost> {
        let (seg, fd) = Segment::create(normalize_capacity(capacity)).map_err(io::Error::other)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .env(FERRY_SHM_FD, fd.as_raw_fd().to_string());
        crate::transport::inherit::inherit_in_child(&mut cmd, fd.as_raw_fd());
        let child = cmd.spawn()?;
        drop(fd);
        Ok(BareHost {
            child,
            tx: End::new(&seg, 0),
            rx: End::new(&seg, 1),
            buf: Vec::new(),
        })
    }

    /// One round trip of `message`; checks the echo has its length.
    pub fn round_trip(&mut self, message: &[u8]) -> io::Result<()> {
        self.tx.send(message);
        let child = &mut self.child;
        if !self.rx.recv(&mut self.buf, &mut || {
            matches!(child.try_wait(), Ok(Some(_)) | Err(_))
        }) || self.buf.len() != message.len()
        {
            return Err(io::Error::other("bare ring peer stopped"));
        }
        Ok(())
    }
}

impl Drop for BareHost {
    fn drop(&mut self) {
        self.tx.send(&[]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer's loop: echo every message back until the stop message or the parent's death.
pub fn echo() -> io::Result<()> {
    let fd: RawFd = std::env::var(FERRY_SHM_FD)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("FERRY_SHM_FD not set"))?;
    #[cfg(target_os = "linux")]
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}"))?;
    // SAFETY: the host passed this descriptor open for us alone (checked open above).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let seg = Segment::attach(std::os::fd::AsFd::as_fd(&fd)).map_err(io::Error::other)?;
    drop(fd);
    let (mut rx, mut tx) = (End::new(&seg, 0), End::new(&seg, 1));
    let parent = rustix::process::getppid();
    let mut buf = Vec::new();
    while rx.recv(&mut buf, &mut || rustix::process::getppid() != parent) {
        tx.send(&buf);
    }
    Ok(())
}
