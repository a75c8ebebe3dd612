//! Passing a file descriptor to a spawned worker, for transports built on inherited
//! descriptors (pipes, socket pairs, shared-memory segments), the built-in `shm` and custom
//! ones alike.
//!
//! The host hands a descriptor to the child's [`Command`] with [`pass`], which also names
//! its number in an environment variable; the worker takes it back with [`take`]. The
//! host's copy stays close-on-exec, and the flag is cleared in the child only, between
//! `fork` and `exec`: workers spawned concurrently from other threads do not inherit it.
//!
//! ```no_run
//! use ferry::transport::inherit;
//! use std::process::Command;
//!
//! // Host: the read end of a pipe goes to the child as `MY_TRANSPORT_IN`.
//! let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
//! let mut cmd = Command::new("my-worker");
//! inherit::pass(&mut cmd, "MY_TRANSPORT_IN", read)?;
//! let child = cmd.spawn()?;
//! drop(cmd); // closes the host's copy of `read`
//!
//! // Worker (in the child process):
//! let read = inherit::take("MY_TRANSPORT_IN")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::TransportError;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Lets the child spawned from `cmd` inherit `fd`, and sets `var` to its number there.
///
/// The command keeps `fd` until it is dropped: drop the command right after the spawn (the
/// host's `WorkerProcess::spawn` does) so the host's copy is closed, and a pipe's peer sees
/// end of file when the child's copy goes. `fd` is made close-on-exec in the host if it was
/// not. Returns the number, the same in the child.
pub fn pass(cmd: &mut Command, var: &str, fd: OwnedFd) -> Result<RawFd, TransportError> {
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| TransportError::Io(e.into()))?;
    let number = fd.as_raw_fd();
    cmd.env(var, number.to_string());
    let clear_cloexec = move || {
        // `fd` lives in the command, so it is open in the forked child: clearing its flags
        // is one `fcntl`, async-signal-safe, allocating nothing.
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
    };
    // SAFETY: the closure makes one async-signal-safe system call on a descriptor it owns,
    // as `pre_exec` requires of code running in the forked child.
    unsafe {
        cmd.pre_exec(clear_cloexec);
    }
    Ok(number)
}

/// Lets the child inherit descriptor `fd`, which the caller keeps open in the host until
/// the spawn (the shm segment's descriptor).
pub(crate) fn inherit_in_child(cmd: &mut Command, fd: RawFd) {
    let clear_cloexec = move || {
        // SAFETY: `fd` is open in the child (fork copied the parent's table, where the
        // caller keeps it open until after the spawn); clearing its flags is a plain
        // `fcntl`, which is async-signal-safe and allocates nothing.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
    };
    // SAFETY: the closure only makes one async-signal-safe system call (see above), as
    // `pre_exec` requires of code running in the forked child.
    unsafe {
        cmd.pre_exec(clear_cloexec);
    }
}

/// The descriptors [`take`] handed out in this process.
static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// In the worker: takes ownership of the descriptor the host passed with [`pass`] under
/// `var`, and makes it close-on-exec (programs the worker starts do not inherit it).
///
/// Each number is taken once per process: a second `take` of it is
/// [`TransportError::Internal`], as is one of the standard streams (0 to 2, owned by the
/// standard library). A variable that is unset, not a number, or names no open descriptor
/// is [`TransportError::BadEnvironment`] (a worker not started by such a host).
pub fn take(var: &'static str) -> Result<OwnedFd, TransportError> {
    let bad = |reason: String| TransportError::BadEnvironment { var, reason };
    let raw = std::env::var(var)
        .map_err(|e| bad(format!("{e} (not spawned by this transport's host?)")))?;
    let fd: RawFd = raw
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| bad(format!("{raw:?} is not a descriptor number")))?;
    if fd <= 2 {
        return Err(TransportError::Internal(format!(
            "{var} names descriptor {fd}, a standard stream"
        )));
    }
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = taken.get_or_insert_with(HashSet::new);
    if taken.contains(&fd) {
        return Err(TransportError::Internal(format!(
            "descriptor {fd} ({var}) was already taken"
        )));
    }
    // SAFETY: `fcntl(F_SETFD)` takes any integer: a number that is not open fails with
    // EBADF and nothing changes. No Rust object is made for the number before it is known
    // to be open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        let e = std::io::Error::last_os_error();
        return Err(bad(format!("{fd} is not an open descriptor ({e})")));
    }
    taken.insert(fd);
    // SAFETY: the descriptor is open (just checked), was inherited from the host for this
    // transport alone (named in `var`), is not a standard stream, and this process takes
    // it once (checked above): nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_variable_is_a_bad_environment() {
        let err = take("FERRY_TEST_INHERIT_NEVER_SET").unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::BadEnvironment {
                    var: "FERRY_TEST_INHERIT_NEVER_SET",
                    ..
                }
            ),
            "got {err:?}"
        );
    }

    #[test]
    fn a_passed_descriptor_is_inherited_under_its_number() {
        // The child reads, through the inherited end named in the variable, what the host
        // writes into the pipe, then end of file: the write end (close-on-exec) never
        // reached the child.
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let mut cmd = Command::new("sh");
        let number = pass(&mut cmd, "FERRY_TEST_FD", read).unwrap();
        cmd.args(["-c", "cat <&\"$FERRY_TEST_FD\""])
            .stdout(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let write = std::fs::File::from(write);
        std::io::Write::write_all(&mut &write, b"through fd").unwrap();
        drop(write);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"through fd", "fd {number}");
    }
}
