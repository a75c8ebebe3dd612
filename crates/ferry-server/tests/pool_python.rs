//! The pool with the Python echo worker (`python -m ferry_worker.echo`): a worker killed
//! during 1,000 in-flight requests, each answered exactly once, and the replacement serving.

mod common;
#[path = "common/python.rs"]
mod python_env;

use common::{with_watchdog, WATCHDOG};
use ferry::pool::{LifecycleKind, Pool, PoolConfig, WorkerState};
use ferry::protocol::{Envelope, ErrorCode};
use ferry::worker::{CallOptions, WorkerSpec};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn python_spec(python: &std::path::Path) -> WorkerSpec {
    WorkerSpec::new(
        "py-echo",
        python.display().to_string(),
        ["-m", "ferry_worker.echo"],
    )
}

#[test]
fn python_worker_killed_during_1000_requests_each_answered_once() {
    let Some(python) = python_env::python_or_skip("pool with the Python echo worker") else {
        return;
    };
    with_watchdog(WATCHDOG * 2, move || {
        let mut config = PoolConfig::default();
        config.min_workers = 2;
        config.max_workers = 2;
        config.max_in_flight = 4;
        config.queue_capacity = 2_000;
        config.idempotent_operations = vec!["echo".into()];
        config.retry_budget_min = 2_000;
        config.restart_backoff = Duration::from_millis(10);
        let pool = Arc::new(Pool::start(python_spec(&python), config).unwrap());
        let mut events = pool.events();
        let victim = pool.status()[0].clone();
        let done = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(async {
            let tasks: Vec<_> = (0..1_000)
                .map(|i| {
                    let (pool, done) = (pool.clone(), done.clone());
                    tokio::spawn(async move {
                        let r = pool
                            .call_async(
                                Envelope::request("", "echo", json!(i)),
                                Vec::new(),
                                CallOptions::default(),
                                |_| {},
                            )
                            .await;
                        done.fetch_add(1, Ordering::Relaxed);
                        r.map(|r| r.data).map_err(|e| e.code())
                    })
                })
                .collect();
            let watch = done.clone();
            let pid = victim.pid.unwrap();
            tokio::task::spawn_blocking(move || {
                while watch.load(Ordering::Relaxed) < 200 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
            })
            .await
            .unwrap();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        assert_eq!(results.len(), 1_000);
        let mut crashed = 0;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(v, &json!(i)),
                Err(ErrorCode::WorkerCrashed) => crashed += 1,
                Err(other) => panic!("request {i}: unexpected {other}"),
            }
        }
        println!(
            "python kill -9: {} ok, {crashed} worker_crashed",
            1_000 - crashed
        );
        // The replacement becomes ready and serves.
        let started = Instant::now();
        loop {
            let e = events.blocking_recv().unwrap();
            if e.kind == LifecycleKind::Ready && e.worker_id == victim.id {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no replacement"
            );
        }
        let status = pool.status();
        let replaced = status.iter().find(|s| s.id == victim.id).unwrap();
        assert_eq!(replaced.state, WorkerState::Ready);
        assert_ne!(replaced.pid, victim.pid);
        for i in 0..20 {
            assert_eq!(
                pool.call(Envelope::request("", "echo", json!(i)), &[], |_| {})
                    .unwrap()
                    .data,
                json!(i)
            );
        }
        pool.shutdown();
    });
}
