//! The pool with the Python echo worker (`python -m ferry_worker.echo`): a worker killed
//! during 1,000 in-flight requests, each answered exactly once, and the replacement serving
//! (the same scenario as the Rust worker's in `engine/pool.rs`: `common/kill9.rs`).

use crate::common;
use crate::common::python as python_env;

use common::kill9::{kill_9_during_1000_requests, Calls};
use common::{with_watchdog, WATCHDOG};
use ferry::worker::WorkerSpec;

fn python_spec(python: &std::path::Path) -> WorkerSpec {
    WorkerSpec::new(
        "py-echo",
        python.display().to_string(),
        ["-m", "ferry_worker.echo"],
    )
}

fn killed_during_1000_requests(calls: Calls) {
    let Some(python) = python_env::python_or_skip("pool with the Python echo worker") else {
        return;
    };
    with_watchdog(WATCHDOG * 2, move || {
        kill_9_during_1000_requests(python_spec(&python), calls);
    });
}

#[test]
fn python_worker_killed_during_1000_async_requests_each_answered_once() {
    killed_during_1000_requests(Calls::AsyncWithRetries);
}

#[test]
fn python_worker_killed_during_1000_sync_requests_each_answered_once() {
    killed_during_1000_requests(Calls::SyncNoRetries);
}
