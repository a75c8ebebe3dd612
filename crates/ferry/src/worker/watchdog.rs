//! Ends a worker process when its host dies, even while a handler runs.
//!
//! A worker notices a dead host on its link only when it next reads it, which a handler in
//! a long step (a 2048² diffusion step, a blocking call into native code) may not do for
//! minutes, running on at full speed for nobody. So [`start`] runs one thread that waits on
//! the host's process (a pidfd, which polls readable once the process has exited, without
//! using any CPU while waiting; `/proc` checks every 100 ms where there is no pidfd) and,
//! once it has gone, removes the worker's private temp folder (`FERRY_TMPDIR`, which the
//! host would have removed) and ends the process with `_exit`: no destructors or
//! `atexit` handlers, which could block on the very threads still running.
//!
//! The host is named by `FERRY_HOST_PID`; a worker started by hand (no variable) has no
//! watchdog.

use super::env::{FERRY_HOST_PID, FERRY_TMPDIR};

/// The exit status of a worker whose host died.
pub const HOST_GONE_EXIT_CODE: i32 = 70;

/// Starts the watchdog for the host named by `FERRY_HOST_PID`, once per process. Returns
/// whether one is running (no variable, an unparsable one, or no way to watch: `false`).
pub fn start() -> bool {
    static STARTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        let Some(pid) = std::env::var(FERRY_HOST_PID)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p > 0)
        else {
            return false;
        };
        let tmpdir = std::env::var_os(FERRY_TMPDIR).map(std::path::PathBuf::from);
        std::thread::Builder::new()
            .name("ferry-host-watchdog".into())
            .spawn(move || {
                wait_for_exit(pid);
                host_gone(pid, tmpdir.as_deref());
            })
            .is_ok()
    })
}

/// Blocks until process `pid` has exited.
#[cfg(target_os = "linux")]
fn wait_for_exit(pid: u32) {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let Some(target) = Pid::from_raw(pid as i32) else {
        return;
    };
    match pidfd_open(target, PidfdFlags::empty()) {
        Ok(fd) => loop {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(n) if n > 0 => return,
                // EINTR or a spurious wake-up: wait again.
                _ => continue,
            }
        },
        // Already gone before we could look.
        Err(rustix::io::Errno::SRCH) => (),
        // No pidfds (kernel before 5.3, or a sandbox that forbids them).
        Err(_) => poll_until_gone(pid),
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn wait_for_exit(pid: u32) {
    poll_until_gone(pid);
}

#[cfg(unix)]
fn poll_until_gone(pid: u32) {
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    loop {
        let gone = match rustix::process::Pid::from_raw(pid as i32) {
            None => true,
            Some(p) => {
                rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)
                    || is_zombie(pid)
            }
        };
        // Our parent was the host and we were re-parented: it died (its pid may even be
        // reused by now).
        let reparented = parent == Some(pid)
            && rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != parent;
        if gone || reparented {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A zombie host (dead, not yet reaped by its own parent) is gone for our purposes: the
/// shm transport's `/proc` reading says so.
#[cfg(target_os = "linux")]
fn is_zombie(pid: u32) -> bool {
    crate::transport::shm::liveness::proc_exited(pid)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn is_zombie(_pid: u32) -> bool {
    false
}

#[cfg(not(unix))]
fn wait_for_exit(_pid: u32) {
    // No watchdog elsewhere yet: block forever, the link's end-of-file still ends the
    // worker between requests.
    loop {
        std::thread::park();
    }
}

fn host_gone(pid: u32, tmpdir: Option<&std::path::Path>) -> ! {
    use std::io::Write as _;
    // Only a folder the host made for us (absolute, with its prefix): never whatever an
    // environment variable happens to name.
    if let Some(dir) = tmpdir.filter(|d| {
        d.is_absolute()
            && d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ferry-tmp-"))
    }) {
        let _ = std::fs::remove_dir_all(dir);
    }
    // The host reads our stderr; it is gone, so a failed write is of no concern.
    let _ = writeln!(
        std::io::stderr(),
        "ferry worker {}: host {pid} exited; exiting",
        std::process::id()
    );
    // SAFETY: `_exit` ends the process at once; it touches no memory of ours and is
    // async-signal-safe, so calling it while other threads run is sound.
    unsafe { libc::_exit(HOST_GONE_EXIT_CODE) }
}
