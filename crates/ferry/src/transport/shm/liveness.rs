//! Is the peer process still there? Shared memory says nothing when a process dies, so
//! each end watches the other's process: a pidfd where Linux has one (readable once the
//! process has exited, reaped or not, and never confused with a later process reusing the
//! pid), `/proc/<pid>/stat` otherwise. Neither reaps: the host's `WorkerProcess` owns
//! reaping its child.

use std::time::{Duration, Instant};

/// Watches one peer process (or nothing, for an in-process pair).
pub(crate) struct Liveness {
    target: Target,
    /// Checks made by [`Liveness::alive`] are at most this frequent.
    every: Duration,
    last_check: Option<Instant>,
    dead: bool,
}

enum Target {
    /// Both ends in one process: only the close flags tell.
    None,
    /// Another process.
    Process {
        pid: u32,
        #[cfg(target_os = "linux")]
        pidfd: Option<std::os::fd::OwnedFd>,
        /// The worker side: our parent when the link was made (the host when it spawned us
        /// directly); a different parent later means it died and we were re-parented.
        parent: Option<u32>,
    },
}

impl Liveness {
    /// No process to watch.
    pub(crate) fn none() -> Self {
        Liveness {
            target: Target::None,
            every: Duration::MAX,
            last_check: None,
            dead: false,
        }
    }

    /// Watches process `pid`, checking at most every `every` in [`alive`](Self::alive).
    /// With `is_parent`, also notices this process being re-parented.
    pub(crate) fn process(pid: u32, is_parent: bool, every: Duration) -> Self {
        #[cfg(target_os = "linux")]
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let parent = is_parent.then(current_parent).flatten();
        Liveness {
            target: Target::Process {
                pid,
                #[cfg(target_os = "linux")]
                pidfd,
                parent,
            },
            every,
            last_check: None,
            dead: false,
        }
    }

    /// Whether the peer lives, looking again only if the last look is older than `every`.
    pub(crate) fn alive(&mut self, now: Instant) -> bool {
        if self.dead || matches!(self.target, Target::None) {
            return !self.dead;
        }
        if self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return true;
        }
        self.last_check = Some(now);
        self.alive_now()
    }

    /// Whether the peer lives, looking now.
    pub(crate) fn alive_now(&mut self) -> bool {
        if self.dead {
            return false;
        }
        let alive = match &self.target {
            Target::None => true,
            Target::Process {
                pid,
                #[cfg(target_os = "linux")]
                pidfd,
                parent,
            } => {
                let reparented = parent.is_some() && current_parent() != *parent;
                #[cfg(target_os = "linux")]
                let exited = match pidfd {
                    Some(fd) => pidfd_exited(fd),
                    None => proc_exited(*pid),
                };
                #[cfg(not(target_os = "linux"))]
                let exited = kill_exited(*pid);
                !reparented && !exited
            }
        };
        self.dead = !alive;
        alive
    }
}

fn current_parent() -> Option<u32> {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
}

/// A pidfd polls readable once its process has exited.
#[cfg(target_os = "linux")]
fn pidfd_exited(fd: &std::os::fd::OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Without a pidfd: gone from `/proc`, or a zombie (`Z`) or dead (`X`) there.
#[cfg(target_os = "linux")]
pub(crate) fn proc_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
    }
}

/// Elsewhere: `kill(pid, 0)` fails once the pid is gone (a zombie still counts as alive
/// until reaped, which is the host's own doing).
#[cfg(not(target_os = "linux"))]
fn kill_exited(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH),
        None => true,
    }
}
