//! The worker pool with real worker processes: dispatch, crashes, hangs, the breaker,
//! priorities, cancellation, scaling, shutdown.

mod common;

use common::{fault_bin, ferry_bin, process_exists, with_watchdog, WATCHDOG};
use ferry::pool::{BreakerState, LifecycleKind, Pool, PoolConfig, PoolError, WorkerState};
use ferry::protocol::{Envelope, ErrorCode, Priority};
use ferry::worker::{CallOptions, WorkerSpec};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn echo_spec() -> WorkerSpec {
    WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"])
}

/// One answer as the tests record it: the echoed data or the error code.
type Answer = Result<serde_json::Value, ErrorCode>;

fn request(op: &str, data: serde_json::Value) -> Envelope {
    Envelope::request("", op, data)
}

/// Waits (bounded by the test's watchdog) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < limit, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

#[test]
fn calls_are_spread_over_workers() {
    with_watchdog(WATCHDOG, || {
        let mut config = PoolConfig::default();
        config.min_workers = 2;
        config.max_workers = 2;
        config.max_in_flight = 1;
        let pool = Arc::new(Pool::start(echo_spec(), config).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let data = json!({"t": t, "i": i});
                        assert_eq!(
                            pool.call(request("echo", data.clone()), &[], |_| {})
                                .unwrap()
                                .data,
                            data
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let status = pool.status();
        assert_eq!(status.len(), 2);
        assert!(
            status
                .iter()
                .all(|s| s.requests_served > 0 && s.state == WorkerState::Ready),
            "{status:?}"
        );
        assert_eq!(status.iter().map(|s| s.requests_served).sum::<u64>(), 400);
    });
}

fn crash_config() -> PoolConfig {
    let mut c = PoolConfig::default();
    c.min_workers = 2;
    c.max_workers = 2;
    c.max_in_flight = 4;
    c.queue_capacity = 2_000;
    c.request_timeout = Duration::from_millis(60_000);
    c.idempotent_operations = vec!["echo".into()];
    c.retry_max_attempts = 3;
    c.retry_budget_min = 2_000;
    c.restart_backoff = Duration::from_millis(10);
    c
}

/// Every one of `results` is the echo of its index or `worker_crashed`; returns how many
/// were crashes.
fn check_exactly_one_answer_each(results: &[Answer]) -> usize {
    assert_eq!(results.len(), 1_000);
    let mut crashed = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(data) => assert_eq!(data, &json!(i)),
            Err(ErrorCode::WorkerCrashed) => crashed += 1,
            Err(other) => panic!("request {i}: unexpected {other}"),
        }
    }
    crashed
}

fn replacement_serves(pool: &Pool, killed_id: &str, old_pid: u32) {
    eventually("the killed worker is replaced", || {
        pool.status().iter().any(|s| {
            s.id == killed_id
                && s.state == WorkerState::Ready
                && s.pid.is_some_and(|p| p != old_pid)
                && s.restarts >= 1
        })
    });
    let before = pool
        .status()
        .iter()
        .find(|s| s.id == killed_id)
        .unwrap()
        .requests_served;
    eventually("the replacement serves", || {
        pool.call(request("echo", json!("again")), &[], |_| {})
            .unwrap();
        pool.status()
            .iter()
            .find(|s| s.id == killed_id)
            .unwrap()
            .requests_served
            > before
    });
}

#[test]
fn kill_9_during_1000_async_requests_answers_each_exactly_once() {
    with_watchdog(WATCHDOG * 2, || {
        let pool = Arc::new(Pool::start(echo_spec(), crash_config()).unwrap());
        let victim = pool.status()[0].clone();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(async {
            let tasks: Vec<_> = (0..1_000)
                .map(|i| {
                    let pool = pool.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        // A short sleep keeps many requests in flight when the kill lands.
                        let op = if i % 10 == 0 { "sleep" } else { "echo" };
                        let data = if op == "sleep" {
                            json!({"ms": 5, "steps": 1})
                        } else {
                            json!(i)
                        };
                        let r = pool
                            .call_async(
                                request(op, data),
                                Vec::new(),
                                CallOptions::default(),
                                |_| {},
                            )
                            .await;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match r {
                            Ok(_) if op == "sleep" => Ok(json!(i)),
                            Ok(resp) => Ok(resp.data),
                            Err(e) => Err(e.code()),
                        }
                    })
                })
                .collect();
            let killer_pool = pool.clone();
            let killer_done = done.clone();
            let killer = tokio::task::spawn_blocking(move || {
                while killer_done.load(std::sync::atomic::Ordering::Relaxed) < 200 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = killer_pool;
                kill9(victim.pid.unwrap());
            });
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            killer.await.unwrap();
            results
        });
        let crashed = check_exactly_one_answer_each(&results);
        // `sleep` is not idempotent: those in flight on the killed worker fail; echo retries.
        println!(
            "async kill -9: {} ok, {crashed} worker_crashed",
            1_000 - crashed
        );
        replacement_serves(&pool, &victim.id, victim.pid.unwrap());
    });
}

#[test]
fn kill_9_during_1000_sync_requests_answers_each_exactly_once() {
    with_watchdog(WATCHDOG * 2, || {
        let mut config = crash_config();
        config.idempotent_operations.clear();
        let pool = Arc::new(Pool::start(echo_spec(), config).unwrap());
        let victim = pool.status()[1].clone();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let results: Arc<Mutex<Vec<Option<Answer>>>> = Arc::new(Mutex::new(vec![None; 1_000]));
        let threads: Vec<_> = (0..100)
            .map(|t| {
                let (pool, done, results) = (pool.clone(), done.clone(), results.clone());
                std::thread::spawn(move || {
                    for k in 0..10 {
                        let i = t * 10 + k;
                        let r = pool.call(request("echo", json!(i)), &[], |_| {});
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let mut all = results.lock().unwrap();
                        assert!(all[i].is_none(), "request {i} answered twice");
                        all[i] = Some(r.map(|r| r.data).map_err(|e| e.code()));
                    }
                })
            })
            .collect();
        while done.load(std::sync::atomic::Ordering::Relaxed) < 300 {
            std::thread::sleep(Duration::from_millis(1));
        }
        kill9(victim.pid.unwrap());
        for t in threads {
            t.join().unwrap();
        }
        let results: Vec<_> = results
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.clone().expect("every request answered"))
            .collect();
        let crashed = check_exactly_one_answer_each(&results);
        println!(
            "sync kill -9 (no retries): {} ok, {crashed} worker_crashed",
            1_000 - crashed
        );
        replacement_serves(&pool, &victim.id, victim.pid.unwrap());
    });
}

#[test]
fn hung_worker_is_detected_and_replaced() {
    with_watchdog(WATCHDOG, || {
        let spec = WorkerSpec::new("hang", fault_bin(), ["hang"]);
        let mut config = PoolConfig::default();
        config.health_interval = Duration::from_millis(50);
        config.health_timeout = Duration::from_millis(300);
        config.restart_backoff = Duration::from_millis(10);
        let pool = Pool::start(spec, config).unwrap();
        let mut events = pool.events();
        let first_pid = pool.status()[0].pid.unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&LifecycleKind::Ready) {
            let e = events.blocking_recv().unwrap();
            if e.kind == LifecycleKind::Unhealthy {
                assert!(e.detail.contains("health check"), "{}", e.detail);
            }
            seen.push(e.kind);
        }
        assert_eq!(
            &seen[..3],
            &[
                LifecycleKind::Unhealthy,
                LifecycleKind::Restarted,
                LifecycleKind::Started
            ]
        );
        assert!(
            !process_exists(first_pid),
            "the hung process was killed and reaped"
        );
        assert_ne!(pool.status()[0].pid.unwrap(), first_pid);
        assert!(pool.status()[0].restarts >= 1);
    });
}

#[test]
fn breaker_opens_on_repeated_start_failures_and_closes_after_a_good_probe() {
    with_watchdog(WATCHDOG, || {
        let counter = std::env::temp_dir().join(format!("ferry-flaky-{}", std::process::id()));
        let _ = std::fs::remove_file(&counter);
        let spec = WorkerSpec::new(
            "flaky",
            fault_bin(),
            [
                "flaky-start".to_owned(),
                counter.display().to_string(),
                "3".into(),
            ],
        );
        let mut config = PoolConfig::default();
        config.breaker_failure_threshold = 3;
        config.breaker_open = Duration::from_millis(400);
        config.restart_backoff = Duration::from_millis(10);
        let pool = Pool::start(spec, config).unwrap();
        let mut events = pool.events();
        eventually("breaker opens", || {
            pool.breaker_state() != BreakerState::Closed
        });
        let err = pool
            .call(request("echo", json!(1)), &[], |_| {})
            .unwrap_err();
        assert!(
            matches!(err, PoolError::CircuitOpen(_)),
            "fail fast while open, got {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Unavailable);
        loop {
            let e = events.blocking_recv().unwrap();
            if e.kind == LifecycleKind::BreakerClosed {
                break;
            }
        }
        assert_eq!(pool.breaker_state(), BreakerState::Closed);
        assert_eq!(
            pool.call(request("echo", json!(2)), &[], |_| {})
                .unwrap()
                .data,
            json!(2)
        );
        let _ = std::fs::remove_file(&counter);
    });
}

#[test]
fn priorities_are_honoured_under_a_full_queue() {
    with_watchdog(WATCHDOG, || {
        let mut config = PoolConfig::default();
        config.max_in_flight = 1;
        config.queue_capacity = 6;
        let pool = Arc::new(Pool::start(echo_spec(), config).unwrap());
        let blocker = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.call(
                    request("sleep", json!({"ms": 400, "steps": 1})),
                    &[],
                    |_| {},
                )
                .unwrap()
            })
        };
        eventually("the worker is busy", || pool.status()[0].in_flight == 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (n, p) in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Low,
            Priority::High,
            Priority::Normal,
        ]
        .into_iter()
        .enumerate()
        {
            let (caller_pool, order) = (pool.clone(), order.clone());
            waiters.push(std::thread::spawn(move || {
                let mut r = request("sleep", json!({"ms": 30, "steps": 1}));
                r.priority = Some(p);
                caller_pool.call(r, &[], |_| {}).unwrap();
                order.lock().unwrap().push(p);
            }));
            eventually("the caller queues", || pool.queue_depth() == n + 1);
        }
        let err = pool
            .call(request("echo", json!("one too many")), &[], |_| {})
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Overloaded,
            "a full queue answers at once: {err}"
        );
        blocker.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        use Priority::*;
        assert_eq!(
            *order.lock().unwrap(),
            vec![High, High, Normal, Normal, Low, Low]
        );
    });
}

#[test]
fn cancellation_reaches_the_worker() {
    with_watchdog(WATCHDOG, || {
        let pool = Pool::start(echo_spec(), PoolConfig::default()).unwrap();
        let options = CallOptions::default().timeout(Duration::from_millis(200));
        let err = pool
            .call_with(
                request("sleep", json!({"ms": 40_000, "steps": 4_000})),
                &[],
                &options,
                |_| {},
            )
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        // One request at a time: this one is served only once the worker has stopped the
        // cancelled sleep (40 s) and answered it; allowed 20 s.
        let options = CallOptions::default().timeout(Duration::from_secs(20));
        let reply = pool
            .call_with(request("echo", json!("after")), &[], &options, |_| {})
            .unwrap();
        assert_eq!(reply.data, json!("after"));
        assert_eq!(
            pool.status()[0].restarts,
            0,
            "the worker honoured the cancel; no restart"
        );
    });
}

#[test]
fn worker_ignoring_a_cancel_is_restarted_after_the_grace_period() {
    with_watchdog(WATCHDOG, || {
        let spec = WorkerSpec::new("slow", fault_bin(), ["slow", "60000"]);
        let mut config = PoolConfig::default();
        config.cancel_grace = Duration::from_millis(200);
        config.restart_backoff = Duration::from_millis(10);
        let pool = Pool::start(spec, config).unwrap();
        let mut events = pool.events();
        let options = CallOptions::default().timeout(Duration::from_millis(100));
        let err = pool
            .call_with(request("echo", json!(1)), &[], &options, |_| {})
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        loop {
            let e = events.blocking_recv().unwrap();
            if e.kind == LifecycleKind::Unhealthy {
                assert!(e.detail.contains("cancelled request"), "{}", e.detail);
                break;
            }
        }
    });
}

#[test]
fn async_call_streams_progress_events() {
    with_watchdog(WATCHDOG, || {
        let pool = Pool::start(echo_spec(), PoolConfig::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut progress = Vec::new();
        let reply = rt
            .block_on(pool.call_async(
                request("sleep", json!({"ms": 20, "steps": 4})),
                Vec::new(),
                CallOptions::default(),
                |e| progress.push(e.data.as_ref().unwrap()["progress"].as_f64().unwrap()),
            ))
            .unwrap();
        assert_eq!(progress, vec![0.25, 0.5, 0.75, 1.0]);
        assert_eq!(reply.data["steps"], 4);
    });
}

#[test]
fn pool_grows_under_queueing_and_shrinks_when_idle() {
    with_watchdog(WATCHDOG, || {
        let mut config = PoolConfig::default();
        config.min_workers = 1;
        config.max_workers = 3;
        config.max_in_flight = 1;
        config.idle_timeout = Duration::from_millis(300);
        let pool = Arc::new(Pool::start(echo_spec(), config).unwrap());
        let callers: Vec<_> = (0..12)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    pool.call(
                        request("sleep", json!({"ms": 100, "steps": 1})),
                        &[],
                        |_| {},
                    )
                    .unwrap()
                })
            })
            .collect();
        eventually("the pool grows to 3", || {
            pool.status()
                .iter()
                .filter(|s| s.state == WorkerState::Ready)
                .count()
                == 3
        });
        for c in callers {
            c.join().unwrap();
        }
        eventually("idle workers are stopped down to min_workers", || {
            pool.status().len() == 1
        });
    });
}

#[test]
fn pool_serves_through_a_worker_printing_garbage() {
    with_watchdog(WATCHDOG, || {
        let pool = Pool::start(
            WorkerSpec::new("garbage", fault_bin(), ["garbage"]),
            PoolConfig::default(),
        )
        .unwrap();
        for i in 0..10 {
            assert_eq!(
                pool.call(request("echo", json!(i)), &[], |_| {})
                    .unwrap()
                    .data,
                json!(i)
            );
        }
    });
}

#[test]
fn retries_carry_idempotent_requests_over_crashes() {
    with_watchdog(WATCHDOG, || {
        // Each process aborts on its 3rd request; `echo` is idempotent, so callers see none of it.
        let spec = WorkerSpec::new("crashy", fault_bin(), ["crash-on-nth", "3"]);
        let mut config = PoolConfig::default();
        config.min_workers = 2;
        config.max_workers = 2;
        config.idempotent_operations = vec!["echo".into()];
        config.restart_backoff = Duration::from_millis(5);
        config.breaker_failure_threshold = 1_000;
        let pool = Pool::start(spec, config).unwrap();
        for i in 0..20 {
            assert_eq!(
                pool.call(request("echo", json!(i)), &[], |_| {})
                    .unwrap()
                    .data,
                json!(i)
            );
        }
        assert!(pool.status().iter().map(|s| s.restarts).sum::<u32>() >= 3);
    });
}

#[test]
fn shutdown_leaves_no_child_process() {
    with_watchdog(WATCHDOG, || {
        let mut config = PoolConfig::default();
        config.min_workers = 3;
        config.max_workers = 3;
        let pool = Pool::start(echo_spec(), config).unwrap();
        let pids: Vec<u32> = pool.status().iter().filter_map(|s| s.pid).collect();
        assert_eq!(pids.len(), 3);
        pool.shutdown();
        for pid in pids {
            assert!(!process_exists(pid), "worker {pid} left behind");
        }
    });
}

#[test]
fn dropping_a_pool_leaves_no_child_process() {
    with_watchdog(WATCHDOG, || {
        let pool = Pool::start(echo_spec(), PoolConfig::default().workers(2, 2)).unwrap();
        let pids: Vec<u32> = pool.status().iter().filter_map(|s| s.pid).collect();
        drop(pool);
        for pid in pids {
            assert!(!process_exists(pid), "worker {pid} left behind");
        }
    });
}

#[test]
fn invalid_config_is_refused_with_its_key() {
    let err = Pool::start(echo_spec(), PoolConfig::default().workers(1, 0)).unwrap_err();
    assert!(
        matches!(&err, PoolError::Config(c) if c.key == "max_workers"),
        "got {err:?}"
    );
}

#[test]
fn a_legacy_worker_is_not_killed_for_working_longer_than_the_health_timeout() {
    with_watchdog(WATCHDOG, || {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/legacy_slow_worker.py"
        );
        let mut spec = WorkerSpec::new("legacy", "python3", [script]);
        spec.dialect = ferry::worker::Dialect::Legacy;
        let mut config = PoolConfig::default();
        config.max_in_flight = 1;
        config.health_interval = Duration::from_millis(20);
        config.health_timeout = Duration::from_millis(100);
        let pool = Pool::start(spec, config).unwrap();
        let pid = pool.status()[0].pid;
        // A request twenty health timeouts long: probes must wait for it, not kill it.
        let r = pool
            .call(request("work", json!({"s": 2})), &[], |_| {})
            .unwrap();
        assert_eq!(r.data["echo"]["s"], 2);
        let status = &pool.status()[0];
        assert_eq!(status.restarts, 0, "{status:?}");
        assert_eq!(status.pid, pid);
        pool.shutdown();
    });
}
