//! A worker dies with its host even while its handler is stuck in a long step, and its
//! private temp folder goes with it. The host (`ferry call`) is SIGKILLed while the
//! worker's handler sleeps in a 60 s step that never looks at the link, so only the
//! worker's watchdog can notice; the test waits for the worker to be gone (an event, with
//! a watchdog far below the step's length) and prints how long it took.

use crate::common;
use crate::common::python as python_env;

use common::with_watchdog;
use python_env::python_or_skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls for `what` (an event the test waits on); the caller's watchdog bounds it.
fn wait_for<T>(mut what: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = what() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn private_tmpdirs(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ferry-tmp-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Gone, or a zombie nobody reaps (in a container, PID 1 may not).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| s == 'Z' || s == 'X'),
    }
}

fn worker_dies_with_its_killed_host(worker_cmd: String) {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    with_watchdog(Duration::from_secs(120), move || {
        let mut host = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "call",
                "--timeout-ms",
                "600000",
                "--cmd",
                &worker_cmd,
                "echo",
                "{}",
            ])
            .env("TMPDIR", &base_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The worker's handler has started once it wrote its marker into its private
        // temp folder (a folder the host made for it under our TMPDIR).
        let (dir, pid) = wait_for(|| {
            private_tmpdirs(&base_path).into_iter().find_map(|dir| {
                let pid = std::fs::read_to_string(dir.join("started")).ok()?;
                Some((dir, pid.trim().parse::<u32>().ok()?))
            })
        });
        host.kill().unwrap();
        let killed = Instant::now();
        host.wait().unwrap();
        wait_for(|| process_gone(pid).then_some(()));
        eprintln!(
            "worker {pid} gone {:?} after its host was killed",
            killed.elapsed()
        );
        // The step it was in lasts 60 s: only the watchdog can have ended it this soon
        // (the outer watchdog is 120 s, but this wait is bounded by the step below).
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the worker outlived its step"
        );
        wait_for(|| (!dir.exists()).then_some(()));
        assert!(private_tmpdirs(&base_path).is_empty());
    });
    drop(base);
}

#[test]
fn rust_worker_in_a_long_step_dies_with_its_sigkilled_host() {
    let cmd = format!("{} stuck-step 60", common::fault_bin());
    worker_dies_with_its_killed_host(cmd);
}

#[test]
fn python_worker_in_a_long_step_dies_with_its_sigkilled_host() {
    let Some(python) = python_or_skip("python_worker_in_a_long_step_dies_with_its_sigkilled_host")
    else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stuck_step_worker.py");
    let cmd = format!("{} {} 60", python.display(), script.display());
    worker_dies_with_its_killed_host(cmd);
}

#[test]
fn a_worker_that_ends_normally_leaves_no_temp_folder() {
    let base = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["call", "--cmd"])
        .arg(format!("{} worker echo", env!("CARGO_BIN_EXE_ferry")))
        .args(["echo", r#"{"a":1}"#])
        .env("TMPDIR", base.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(private_tmpdirs(base.path()).is_empty());
}
