//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod gates;
pub mod http;
pub mod kill9;
pub mod python;

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread and fails the test if it has not finished within `limit`.
///
/// A watchdog, not a timing assertion: `limit` is far above any expected run time and
/// exists only so a bug that hangs shows up as a failure instead of a stuck CI job.
pub fn with_watchdog<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("thread ended without a result or a panic"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test still running after {limit:?}, probably hung")
        }
    }
}

/// The watchdog limit used by most tests.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Path of the `ferry` binary built for these tests.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Path of the fault worker binary (`ferry-fault-worker`, of the `ferry-bench` package).
///
/// Cargo hands a test the paths of its own package's binaries only, so this one is found
/// beside them in the target folder. `cargo test` of the workspace (what `scripts/test`
/// runs) builds it; testing this package alone needs `cargo build -p ferry-bench` first,
/// and the panic says so.
pub fn fault_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let ferry = std::path::Path::new(ferry_bin());
        let path = ferry.with_file_name(format!(
            "ferry-fault-worker{}",
            std::env::consts::EXE_SUFFIX
        ));
        assert!(
            path.is_file(),
            "{} is missing: run the workspace's tests (cargo test --workspace), or \
             cargo build -p ferry-bench --bin ferry-fault-worker first",
            path.display()
        );
        path.display().to_string()
    })
}

/// The repository's root folder (fixtures, docs and workers live there).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Waits (bounded by the test's watchdog) until `cond` holds: for events the test cannot
/// be told of directly (a pool's status, a process's end). Says what it waits for now and
/// then, so a hang shows where.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let mut polls = 0u64;
    while !cond() {
        polls += 1;
        if polls % 1_000 == 0 {
            eprintln!("still waiting: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` still exists (as anything but a reaped pid).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
