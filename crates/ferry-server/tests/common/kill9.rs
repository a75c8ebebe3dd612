//! A pool worker killed with SIGKILL during 1,000 requests: every request is answered
//! exactly once (its echo, or `worker_crashed`), and the killed worker's replacement
//! serves. One body for every kind of worker (the Rust and the Python echo worker) and
//! both ways of calling (async with retries, sync without).
//!
//! The kill is not aimed by timing: before the 1,000 start, one long `sleep` request is
//! made and the worker holding it (seen in the pool's status) is the victim, so the kill
//! always lands on a worker with a request in flight, and that request must come back
//! `worker_crashed` (`sleep` is never retried).

use super::eventually;
use ferry::pool::{Pool, PoolConfig, WorkerState, WorkerStatus};
use ferry::protocol::{Envelope, ErrorCode};
use ferry::worker::{CallOptions, WorkerSpec};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the 1,000 requests are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// `call_async` from tasks of a tokio runtime; `echo` is idempotent (retried over
    /// the crash), every tenth request is a short `sleep` (not retried).
    AsyncWithRetries,
    /// `call` from 100 threads, ten each; nothing is idempotent (no retries).
    SyncNoRetries,
}

/// One answer as recorded: the echoed data or the error code.
pub type Answer = Result<Value, ErrorCode>;

const TOTAL: usize = 1_000;
/// Answers before the kill.
const KILL_AFTER: usize = 200;

fn config(calls: Calls) -> PoolConfig {
    let mut config = PoolConfig::default()
        .workers(2, 2)
        .max_in_flight(4)
        .queue_capacity(2_000)
        // The watchdog bounds the test; no request may time out while it runs.
        .request_timeout(Duration::from_secs(600))
        .idempotent_operations(match calls {
            Calls::AsyncWithRetries => vec!["echo".to_owned()],
            Calls::SyncNoRetries => Vec::new(),
        });
    config.retry_max_attempts = 3;
    config.retry_budget_min = 2_000;
    config.restart_backoff = Duration::from_millis(10);
    config
}

/// Request `i` of the 1,000: `(operation, data)`.
fn nth_request(calls: Calls, i: usize) -> (&'static str, Value) {
    if calls == Calls::AsyncWithRetries && i % 10 == 0 {
        ("sleep", json!({"ms": 5, "steps": 1}))
    } else {
        ("echo", json!(i))
    }
}

fn kill9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

/// Runs the whole scenario on workers made from `spec`.
pub fn kill_9_during_1000_requests(spec: WorkerSpec, calls: Calls) {
    let kind = spec.worker_type.clone();
    let pool = Arc::new(Pool::start(spec, config(calls)).unwrap());

    // The victim: the worker holding a request that only the kill can end (ten minutes
    // of 100 ms steps).
    let pinned = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.call(
                Envelope::request("", "sleep", json!({"ms": 600_000, "steps": 6_000})),
                &[],
                |_| {},
            )
            .map(|r| r.data)
            .map_err(|e| e.code())
        })
    };
    let mut victim: Option<WorkerStatus> = None;
    eventually("the pinned request is in flight", || {
        victim = pool.status().into_iter().find(|s| s.in_flight == 1);
        victim.is_some()
    });
    let victim = victim.unwrap();
    let victim_pid = victim.pid.unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let killer = {
        let done = done.clone();
        std::thread::spawn(move || {
            while done.load(Ordering::Relaxed) < KILL_AFTER {
                std::thread::sleep(Duration::from_millis(1));
            }
            kill9(victim_pid);
        })
    };
    let results = match calls {
        Calls::AsyncWithRetries => run_async(&pool, &done),
        Calls::SyncNoRetries => run_sync(&pool, &done),
    };
    killer.join().unwrap();

    assert_eq!(
        pinned.join().unwrap(),
        Err(ErrorCode::WorkerCrashed),
        "{kind}: the request in flight on the killed worker"
    );
    let crashed = check_each_answered_once(calls, &results);
    println!(
        "{kind} kill -9 ({calls:?}): {} ok, {crashed} worker_crashed",
        TOTAL - crashed
    );
    replacement_serves(&pool, &victim.id, victim_pid);
    pool.shutdown();
}

fn run_async(pool: &Arc<Pool>, done: &Arc<AtomicUsize>) -> Vec<Answer> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..TOTAL)
            .map(|i| {
                let (pool, done) = (pool.clone(), done.clone());
                tokio::spawn(async move {
                    let (op, data) = nth_request(Calls::AsyncWithRetries, i);
                    let r = pool
                        .call_async(
                            Envelope::request("", op, data),
                            Vec::new(),
                            CallOptions::default(),
                            |_| {},
                        )
                        .await;
                    done.fetch_add(1, Ordering::Relaxed);
                    match r {
                        // A `sleep` answers its own data; it counts as the echo of `i`.
                        Ok(_) if op == "sleep" => Ok(json!(i)),
                        Ok(resp) => Ok(resp.data),
                        Err(e) => Err(e.code()),
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(TOTAL);
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    })
}

fn run_sync(pool: &Arc<Pool>, done: &Arc<AtomicUsize>) -> Vec<Answer> {
    let results: Arc<Mutex<Vec<Option<Answer>>>> = Arc::new(Mutex::new(vec![None; TOTAL]));
    let threads: Vec<_> = (0..100)
        .map(|t| {
            let (pool, done, results) = (pool.clone(), done.clone(), results.clone());
            std::thread::spawn(move || {
                for k in 0..TOTAL / 100 {
                    let i = t * (TOTAL / 100) + k;
                    let (op, data) = nth_request(Calls::SyncNoRetries, i);
                    let r = pool.call(Envelope::request("", op, data), &[], |_| {});
                    done.fetch_add(1, Ordering::Relaxed);
                    let mut all = results.lock().unwrap();
                    assert!(all[i].is_none(), "request {i} answered twice");
                    all[i] = Some(r.map(|r| r.data).map_err(|e| e.code()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = results.lock().unwrap();
    all.iter()
        .map(|r| r.clone().expect("every request answered"))
        .collect()
}

/// Every answer is the echo of its index or `worker_crashed` (with retries, only for the
/// `sleep` requests, which are not idempotent); returns how many crashed.
fn check_each_answered_once(calls: Calls, results: &[Answer]) -> usize {
    assert_eq!(results.len(), TOTAL);
    let mut crashed = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(data) => assert_eq!(data, &json!(i)),
            Err(ErrorCode::WorkerCrashed) => {
                let (op, _) = nth_request(calls, i);
                assert!(
                    calls == Calls::SyncNoRetries || op == "sleep",
                    "request {i} ({op}) is idempotent: it should have been retried"
                );
                crashed += 1;
            }
            Err(other) => panic!("request {i}: unexpected {other}"),
        }
    }
    crashed
}

/// The killed worker is replaced (same id, new process) and the replacement serves.
pub fn replacement_serves(pool: &Pool, killed_id: &str, old_pid: u32) {
    eventually("the killed worker is replaced", || {
        pool.status().iter().any(|s| {
            s.id == killed_id
                && s.state == WorkerState::Ready
                && s.pid.is_some_and(|p| p != old_pid)
                && s.restarts >= 1
        })
    });
    let served = |pool: &Pool| {
        pool.status()
            .iter()
            .find(|s| s.id == killed_id)
            .unwrap()
            .requests_served
    };
    let before = served(pool);
    eventually("the replacement serves", || {
        let r = pool.call(Envelope::request("", "echo", json!("again")), &[], |_| {});
        assert_eq!(r.unwrap().data, json!("again"));
        served(pool) > before
    });
}
