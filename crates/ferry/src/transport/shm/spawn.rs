//! Wiring the shm transport into a spawn: the host creates the segment and lets the child
//! inherit its descriptor; the worker maps it from the number in its environment.

use super::link::{ends, ShmEnds};
use super::liveness::Liveness;
use super::segment::{normalize_capacity, Segment, Side};
use super::{ShmOptions, WaitStrategy};
use crate::protocol::env::FERRY_HOST_PID;
use crate::transport::inherit::inherit_in_child;
use crate::transport::{Link, PendingLink, TransportError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The descriptor number of the segment in the worker (inherited from the host).
pub const FERRY_SHM_FD: &str = "FERRY_SHM_FD";
/// The wait strategy the worker should use: `spin`, `adaptive`, `block`.
pub const FERRY_SHM_WAIT: &str = "FERRY_SHM_WAIT";
/// The worker's longest spin per wait, in microseconds.
pub const FERRY_SHM_SPIN_US: &str = "FERRY_SHM_SPIN_US";
/// The worker's longest yielding per wait after the spin, in microseconds.
pub const FERRY_SHM_YIELD_US: &str = "FERRY_SHM_YIELD_US";

/// The host's side of a shm link being set up for one child.
pub(crate) struct ShmPending {
    segment: Arc<Segment>,
    fd: Option<OwnedFd>,
    options: ShmOptions,
    max_frame: usize,
}

/// Creates the segment for one worker.
pub(crate) fn prepare(
    options: &ShmOptions,
    max_frame: usize,
) -> Result<Box<dyn PendingLink>, TransportError> {
    let (segment, fd) = Segment::create(normalize_capacity(options.capacity))?;
    Ok(Box::new(ShmPending {
        segment,
        fd: Some(fd),
        options: *options,
        max_frame,
    }))
}

impl PendingLink for ShmPending {
    fn configure(&mut self, cmd: &mut Command) -> Result<(), TransportError> {
        let fd: RawFd = match &self.fd {
            Some(fd) => fd.as_raw_fd(),
            None => {
                return Err(TransportError::Internal(
                    "shm segment already handed to a child".into(),
                ))
            }
        };
        cmd.env(FERRY_SHM_FD, fd.to_string())
            .env(FERRY_SHM_WAIT, self.options.wait.as_str())
            .env(FERRY_SHM_SPIN_US, self.options.spin.as_micros().to_string())
            .env(
                FERRY_SHM_YIELD_US,
                self.options.yield_time.as_micros().to_string(),
            );
        inherit_in_child(cmd, fd);
        Ok(())
    }

    fn connect(
        mut self: Box<Self>,
        child: &mut Child,
        _deadline: Instant,
    ) -> Result<Link, TransportError> {
        // The child has its copy now; ours is not needed (the mapping stays).
        self.fd = None;
        let pid = child.id();
        let every = self.options.liveness_interval;
        // No need to wait for the child to map the segment: frames sent before it does wait
        // in the ring, and a child that dies first is noticed by its pidfd.
        Ok(ends(
            &self.segment,
            Side::Host,
            || Liveness::process(pid, false, every),
            &self.options,
            self.max_frame,
        )
        .into_link())
    }
}

/// The worker's options from its environment (defaults where unset).
pub(crate) fn options_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ShmOptions, TransportError> {
    let mut options = ShmOptions::default();
    let micros = |var: &'static str| -> Result<Option<Duration>, TransportError> {
        lookup(var)
            .map(|v| {
                v.parse::<u64>().map(Duration::from_micros).map_err(|_| {
                    TransportError::BadEnvironment {
                        var,
                        reason: format!("{v:?} is not a number of microseconds"),
                    }
                })
            })
            .transpose()
    };
    if let Some(w) = lookup(FERRY_SHM_WAIT) {
        options.wait = w.parse::<WaitStrategy>()?;
    }
    if let Some(spin) = micros(FERRY_SHM_SPIN_US)? {
        options.spin = spin;
    }
    if let Some(y) = micros(FERRY_SHM_YIELD_US)? {
        options.yield_time = y;
    }
    Ok(options)
}

/// The worker's ends, from `FERRY_SHM_FD` (and `FERRY_HOST_PID`, `FERRY_SHM_*`). Call once:
/// the descriptor is closed once mapped.
pub fn worker_ends(max_frame: usize) -> Result<ShmEnds, TransportError> {
    let var = |k: &str| std::env::var(k).ok();
    let options = options_from_lookup(var)?;
    let bad_fd = |reason: String| TransportError::BadEnvironment {
        var: FERRY_SHM_FD,
        reason,
    };
    let raw =
        var(FERRY_SHM_FD).ok_or_else(|| bad_fd("not set (not spawned by a shm host?)".into()))?;
    let fd: RawFd = raw
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| bad_fd(format!("{raw:?} is not a descriptor")))?;
    #[cfg(target_os = "linux")]
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(bad_fd(format!("{fd} is not an open descriptor")));
    }
    // SAFETY: the descriptor is open (the host passed it open, and on Linux we just looked)
    // and stays open for the duration of `attach`; we close it only below.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let segment = Segment::attach(borrowed)?;
    // Mapped: close the descriptor, so programs this worker starts do not inherit it.
    // SAFETY: it is open and is a ferry segment (checked by `attach`), inherited from the
    // host for this purpose alone; nothing else in this process owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    let every = options.liveness_interval;
    let host = var(FERRY_HOST_PID).and_then(|p| p.parse::<u32>().ok());
    let liveness = || match host {
        Some(pid) => {
            let is_parent =
                rustix::process::getppid().is_some_and(|p| p.as_raw_nonzero().get() as u32 == pid);
            Liveness::process(pid, is_parent, every)
        }
        None => Liveness::none(),
    };
    Ok(ends(&segment, Side::Worker, liveness, &options, max_frame))
}

/// The worker's end as a [`Link`] (see [`worker_ends`]).
pub fn worker_link(max_frame: usize) -> Result<Link, TransportError> {
    Ok(worker_ends(max_frame)?.into_link())
}
