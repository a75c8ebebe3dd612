//! Gates: the test side of `ferry-fault-worker gated DIR` (see that binary's docs).
//!
//! A test that needs a worker to be *in* a step (to pause a workflow between steps, to
//! fill a queue behind a busy worker, to make a pool grow) sends the operation `gate`
//! with a label, waits until the worker has logged `started LABEL`, does what it tests,
//! and then [`release`](Gates::release)s the label. Nothing depends on how long anything
//! takes: the waits are for lines in the worker's log (bounded only by the test's
//! watchdog), and the order of the log's lines is the order in which workers ran things.

use ferry::worker::WorkerSpec;
use std::path::Path;
use std::time::Duration;

/// A folder shared with gated workers: their log, and the release files.
pub struct Gates {
    dir: tempfile::TempDir,
}

impl Default for Gates {
    fn default() -> Self {
        Self::new()
    }
}

impl Gates {
    /// A new, empty folder.
    pub fn new() -> Gates {
        Gates {
            dir: tempfile::Builder::new()
                .prefix("ferry-gates-")
                .tempdir()
                .expect("temp folder for gates"),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The worker's arguments: `gated DIR` and `options` (`fail-starts=N`, `hold-ready`).
    pub fn args(&self, options: &[&str]) -> Vec<String> {
        let mut args = vec!["gated".to_owned(), self.dir().display().to_string()];
        args.extend(options.iter().map(|o| (*o).to_owned()));
        args
    }

    /// A worker spec of type `worker_type` running the gated worker with `options`.
    pub fn spec(&self, worker_type: &str, options: &[&str]) -> WorkerSpec {
        WorkerSpec::new(worker_type, super::fault_bin(), self.args(options))
    }

    /// The lines logged so far, in order.
    pub fn log(&self) -> Vec<String> {
        match std::fs::read_to_string(self.dir().join("log")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading the gate log: {e}"),
        }
    }

    /// The labels logged with `event` (`started`, `finished`, `cancelled`), in order.
    pub fn labels(&self, event: &str) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| l.strip_prefix(event)?.strip_prefix(' '))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log has `line` (an event; the test's watchdog bounds the wait).
    pub fn wait_for(&self, line: &str) {
        self.wait_until(line, |log| log.iter().any(|l| l == line));
    }

    /// Waits until `done` holds on the log (an event; the test's watchdog bounds the wait).
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let mut polls = 0u64;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            polls += 1;
            if polls % 5_000 == 0 {
                eprintln!("still waiting for the gate log: {what}; log: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Lets the step waiting (or about to wait) at `label` go on.
    pub fn release(&self, label: &str) {
        std::fs::write(self.dir().join(format!("release-{label}")), b"").expect("release file");
    }

    /// Lets every gate go on, now and from now on.
    pub fn release_all(&self) {
        std::fs::write(self.dir().join("release-all"), b"").expect("release file");
    }
}

impl Drop for Gates {
    fn drop(&mut self) {
        // Workers still waiting (a test that failed half-way) go on and can be stopped.
        let _ = std::fs::write(self.dir().join("release-all"), b"");
    }
}
