//! The worker pool with real worker processes: dispatch, crashes, hangs, the breaker,
//! priorities, cancellation, scaling, shutdown.

use crate::common;

use common::gates::Gates;
use common::kill9::{kill_9_during_1000_requests, Calls};
use common::{eventually, fault_bin, ferry_bin, process_exists, with_watchdog, WATCHDOG};
use ferry::pool::{BreakerState, LifecycleKind, Pool, PoolConfig, PoolError, WorkerState};
use ferry::protocol::{Envelope, ErrorCode, Priority};
use ferry::worker::{CallOptions, WorkerSpec};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn echo_spec() -> WorkerSpec {
    WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"])
}

fn request(op: &str, data: serde_json::Value) -> Envelope {
    Envelope::request("", op, data)
}

#[test]
fn calls_are_spread_over_workers() {
    with_watchdog(WATCHDOG, || {
        let config = {
            let mut c = PoolConfig::default();
            c.min_workers = 2;
            c.max_workers = 2;
            c.max_in_flight = 1;
            c
        };
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

#[test]
fn a_pool_call_sees_its_answer_in_place_on_shm_and_reports_errors() {
    with_watchdog(WATCHDOG, || {
        let mut spec = echo_spec();
        spec.transport = ferry::transport::TransportKind::Shm;
        // No health check during the test: one on the same link could lead the read and
        // copy this caller's answer for it (correct, but then `copied` is true).
        let mut config = PoolConfig::default();
        config.health_interval = Duration::from_secs(3600);
        let pool = Pool::start(spec, config).unwrap();
        let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let options = CallOptions::default();
        for i in 0..20 {
            let len = pool
                .call_in_place(
                    request("echo", json!({"i": i})),
                    &[&image],
                    &options,
                    |_| {},
                    |answer| {
                        assert!(
                            !answer.copied,
                            "a lone synchronous caller reads its own answer"
                        );
                        assert_eq!(answer.data, &json!({"i": i}));
                        assert_eq!(answer.attachments, [&image[..]]);
                        answer.attachments[0].len()
                    },
                )
                .unwrap();
            assert_eq!(len, image.len());
        }
        let refused = pool.call_in_place(
            request("no_such_operation", json!(null)),
            &[],
            &options,
            |_| {},
            |_| panic!("an error answer is not a response"),
        );
        assert!(
            matches!(&refused, Err(PoolError::Call(ferry::worker::CallError::Remote(e))) if e.code == ErrorCode::UnknownOperation),
            "{refused:?}"
        );
        assert_eq!(
            pool.call(request("echo", json!(1)), &[], |_| {})
                .unwrap()
                .data,
            json!(1)
        );
        pool.shutdown();
    });
}

#[test]
fn kill_9_of_a_rust_worker_during_1000_async_requests_answers_each_exactly_once() {
    with_watchdog(WATCHDOG * 2, || {
        kill_9_during_1000_requests(echo_spec(), Calls::AsyncWithRetries);
    });
}

#[test]
fn kill_9_of_a_rust_worker_during_1000_sync_requests_answers_each_exactly_once() {
    with_watchdog(WATCHDOG * 2, || {
        kill_9_during_1000_requests(echo_spec(), Calls::SyncNoRetries);
    });
}

#[test]
fn hung_worker_is_detected_and_replaced() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let config = {
            let mut c = PoolConfig::default();
            c.health_interval = Duration::from_millis(50);
            c.health_timeout = Duration::from_millis(300);
            c.restart_backoff = Duration::from_millis(10);
            c
        };
        let pool = Arc::new(Pool::start(gates.spec("gated", &[]), config).unwrap());
        let mut events = pool.events();
        let first_pid = pool.status()[0].pid.unwrap();
        // The worker hangs only now, once the test listens: a step that never looks at the
        // link (so no health answer) and is never released.
        let hung = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.call(
                    request("gate", json!({"label": "hung", "deaf": true})),
                    &[],
                    |_| {},
                )
            })
        };
        let mut seen = Vec::new();
        while !seen.contains(&LifecycleKind::Ready) {
            let e = events.blocking_recv().unwrap();
            if e.kind == LifecycleKind::Unhealthy {
                assert!(e.detail.contains("health check"), "{}", e.detail);
                assert_eq!(e.pid, Some(first_pid));
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
        // Killing the hung process ended the request on it.
        let err = hung.join().unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::WorkerCrashed, "{err}");
        assert_eq!(gates.labels("started"), ["hung"]);
        assert!(gates.labels("finished").is_empty());
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
        // Starts 1 to 3 fail before `ready`; every later start waits at the gate
        // `ready-N` until the test releases it, so the breaker cannot close behind the
        // test's back.
        let gates = Gates::new();
        let mut spec = gates.spec("flaky", &["fail-starts=3", "hold-ready"]);
        // The probe waits for the test, which the watchdog bounds, not a startup timeout.
        spec.startup_timeout = Duration::from_secs(600);
        let config = {
            let mut c = PoolConfig::default();
            c.breaker_failure_threshold = 3;
            c.breaker_open = Duration::from_millis(50);
            c.restart_backoff = Duration::from_millis(10);
            c
        };
        let pool = Pool::start(spec, config).unwrap();
        // The probe (start 4) is waiting: three failures opened the breaker and its open
        // time ran out.
        let log = gates.wait_until("the probe waits before ready", |log| {
            log.iter().any(|l| l == "started ready-4")
        });
        let starts: Vec<&str> = log
            .iter()
            .filter(|l| l.starts_with("exit ") || l.starts_with("started "))
            .map(String::as_str)
            .collect();
        assert_eq!(
            starts,
            ["exit 1", "exit 2", "exit 3", "started ready-4"],
            "no start while open, one probe: {log:?}"
        );
        assert_eq!(pool.breaker_state(), BreakerState::HalfOpen);
        let err = pool
            .call(request("echo", json!(1)), &[], |_| {})
            .unwrap_err();
        assert!(
            matches!(err, PoolError::CircuitOpen(_)),
            "fail fast until the probe is ready, got {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Unavailable);
        let mut events = pool.events();
        gates.release("ready-4");
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
        pool.shutdown();
    });
}

#[test]
fn priorities_are_honoured_under_a_full_queue() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let config = {
            let mut c = PoolConfig::default();
            c.max_in_flight = 1;
            c.queue_capacity = 6;
            c
        };
        let pool = Arc::new(Pool::start(gates.spec("gated", &[]), config).unwrap());
        // The only worker is held in a step until every caller below is queued.
        let blocker = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.call(request("gate", json!({"label": "blocker"})), &[], |_| {})
                    .unwrap()
            })
        };
        gates.wait_for("started blocker");
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
            let caller_pool = pool.clone();
            waiters.push(std::thread::spawn(move || {
                let label = format!("{n}-{}", p.as_str());
                let mut r = request("echo", json!({ "label": label }));
                r.priority = Some(p);
                caller_pool.call(r, &[], |_| {}).unwrap();
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
        gates.release("blocker");
        blocker.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        // One request at a time: the order the worker ran them is the order they left
        // the queue. By priority, first come first served within one.
        assert_eq!(
            gates.labels("started"),
            ["blocker", "2-high", "4-high", "1-normal", "5-normal", "0-low", "3-low"]
        );
    });
}

#[test]
fn cancellation_reaches_the_worker() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let config = {
            let mut c = PoolConfig::default();
            // Only the cancel can end the step: no restart takes it away, however slow.
            c.cancel_grace = Duration::from_millis(600_000);
            c
        };
        let pool = Pool::start(gates.spec("gated", &[]), config).unwrap();
        let options = CallOptions::default().timeout(Duration::from_millis(200));
        let err = pool
            .call_with(
                request("gate", json!({"label": "held"})),
                &[],
                &options,
                |_| {},
            )
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        // The step is never released: only the cancel the timeout sent can end it.
        gates.wait_for("cancelled held");
        // One request at a time: this one is served once the worker has answered the
        // cancelled one.
        let reply = pool
            .call(request("echo", json!("after")), &[], |_| {})
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
        let config = {
            let mut c = PoolConfig::default();
            c.cancel_grace = Duration::from_millis(200);
            c.restart_backoff = Duration::from_millis(10);
            c
        };
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
        let gates = Gates::new();
        let config = {
            let mut c = PoolConfig::default();
            c.min_workers = 1;
            c.max_workers = 3;
            c.max_in_flight = 1;
            c.idle_timeout = Duration::from_millis(300);
            c
        };
        let pool = Arc::new(Pool::start(gates.spec("gated", &[]), config).unwrap());
        // Twelve steps that stay in the worker until released: callers queue for as long
        // as the test needs.
        let callers: Vec<_> = (0..12)
            .map(|i| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    pool.call(
                        request("gate", json!({ "label": format!("c{i}") })),
                        &[],
                        |_| {},
                    )
                    .unwrap()
                })
            })
            .collect();
        eventually("the pool grows to 3, each worker in a step", || {
            let status = pool.status();
            status.len() == 3
                && status
                    .iter()
                    .all(|s| s.state == WorkerState::Ready && s.in_flight == 1)
        });
        gates.wait_until("three steps started", |log| {
            log.iter().filter(|l| l.starts_with("started ")).count() == 3
        });
        eventually("the other nine callers queue", || pool.queue_depth() == 9);
        gates.release_all();
        for c in callers {
            c.join().unwrap();
        }
        assert_eq!(gates.labels("finished").len(), 12);
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
        let config = {
            let mut c = PoolConfig::default();
            c.min_workers = 2;
            c.max_workers = 2;
            c.idempotent_operations = vec!["echo".into()];
            c.restart_backoff = Duration::from_millis(5);
            c.breaker_failure_threshold = 1_000;
            c
        };
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
        let config = {
            let mut c = PoolConfig::default();
            c.min_workers = 3;
            c.max_workers = 3;
            c
        };
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
        let pool = Pool::start(echo_spec(), {
            let mut c = PoolConfig::default();
            c.min_workers = 2;
            c.max_workers = 2;
            c
        })
        .unwrap();
        let pids: Vec<u32> = pool.status().iter().filter_map(|s| s.pid).collect();
        drop(pool);
        for pid in pids {
            assert!(!process_exists(pid), "worker {pid} left behind");
        }
    });
}

#[test]
fn invalid_config_is_refused_with_its_key() {
    let err = Pool::start(echo_spec(), {
        let mut c = PoolConfig::default();
        c.max_workers = 0;
        c
    })
    .unwrap_err();
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
        let spec =
            WorkerSpec::new("legacy", "python3", [script]).dialect(ferry::worker::Dialect::Legacy);
        let (interval, timeout) = (Duration::from_millis(20), Duration::from_millis(50));
        let config = {
            let mut c = PoolConfig::default();
            c.health_interval = interval;
            c.health_timeout = timeout;
            c
        };
        let pool = Arc::new(Pool::start(spec, config).unwrap());
        let mut events = pool.events();
        let pid = pool.status()[0].pid;
        assert!(pid.is_some());
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let caller = {
            let pool = pool.clone();
            let data = json!({"release": release.display().to_string()});
            std::thread::spawn(move || pool.call(request("work", data), &[], |_| {}))
        };
        // Each deferral is a health interval passed with the request at the worker and no
        // probe sent. Wait for enough of them that a probe sent at the first would have
        // timed out long before the last: the worker has worked well past the timeout.
        let needed = (timeout.as_millis() / interval.as_millis()) as usize + 2;
        let mut deferred = 0;
        while deferred < needed {
            let e = events.blocking_recv().unwrap();
            assert!(
                !matches!(
                    e.kind,
                    LifecycleKind::Unhealthy | LifecycleKind::Crashed | LifecycleKind::Restarted
                ),
                "a working legacy worker was replaced: {e:?}"
            );
            if e.kind == LifecycleKind::HealthDeferred {
                assert_eq!(e.pid, pid);
                deferred += 1;
            }
        }
        std::fs::write(&release, b"").unwrap();
        let r = caller.join().unwrap().unwrap();
        assert_eq!(r.data["echo"]["release"], release.display().to_string());
        let status = &pool.status()[0];
        assert_eq!((status.restarts, status.pid), (0, pid), "{status:?}");
        // Idle again, it is probed again: the next deferral-free health check passes, and
        // the worker keeps serving.
        let r = pool
            .call(request("echo", json!({"after": 1})), &[], |_| {})
            .unwrap();
        assert_eq!(r.data["echo"]["after"], 1);
        while let Ok(e) = events.try_recv() {
            assert!(
                !matches!(e.kind, LifecycleKind::Unhealthy | LifecycleKind::Crashed),
                "{e:?}"
            );
        }
        pool.shutdown();
    });
}

fn env_worker_spec() -> WorkerSpec {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy_env_worker.py"
    );
    WorkerSpec::new("gpu", "python3", [script])
        .dialect(ferry::worker::Dialect::Legacy)
        // The pool's assignment wins over the spec's own setting.
        .env("CUDA_VISIBLE_DEVICES", "7")
}

/// Calls the pool until every worker of `ids` has answered (rotation spreads idle
/// callers' calls over equally loaded workers); each worker's last answer.
fn answers_of(
    pool: &Pool,
    ids: &[String],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        if ids.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        let r = pool.call(request("env", json!({})), &[], |_| {}).unwrap();
        let id = r.data["FERRY_WORKER_ID"].as_str().unwrap().to_owned();
        seen.insert(id, r.data);
    }
    assert!(ids.iter().all(|id| seen.contains_key(id)), "{seen:?}");
    seen
}

#[test]
fn each_worker_gets_its_own_device_and_a_replacement_keeps_it() {
    with_watchdog(WATCHDOG, || {
        let config = PoolConfig::default()
            .workers(3, 3)
            .devices(["cuda:0", "cuda:1"]);
        let pool = Pool::start(env_worker_spec(), config).unwrap();
        let status = pool.status();
        let devices: Vec<_> = status.iter().map(|s| s.device.clone()).collect();
        // Three workers over two devices: round-robin, in the order they were added.
        assert_eq!(
            devices,
            [
                Some("cuda:0".into()),
                Some("cuda:1".into()),
                Some("cuda:0".into())
            ],
            "{status:?}"
        );
        let ids: Vec<String> = status.iter().map(|s| s.id.clone()).collect();
        let answers = answers_of(&pool, &ids);
        for s in &status {
            let device = s.device.as_deref().unwrap();
            let a = &answers[&s.id];
            assert_eq!(a["FERRY_DEVICE"], device, "{a}");
            assert_eq!(
                a["CUDA_VISIBLE_DEVICES"],
                device.strip_prefix("cuda:").unwrap(),
                "{a}"
            );
            assert_eq!(a["pid"], s.pid.unwrap(), "{a}");
        }
        // RSS read once every worker has answered (a worker fresh from spawn may not have
        // mapped its interpreter yet: its RSS rounds to 0.0 MB).
        for s in pool.status() {
            assert!(s.memory_rss_mb.is_some_and(|mb| mb > 0.0), "{s:?}");
        }

        // Replace the worker on cuda:1: its replacement is on cuda:1 too.
        let on_one = status
            .iter()
            .find(|s| s.device.as_deref() == Some("cuda:1"))
            .unwrap();
        let mut events = pool.events();
        assert!(pool.restart(&on_one.id));
        loop {
            let e = events.blocking_recv().unwrap();
            if e.worker_id == on_one.id && e.kind == LifecycleKind::Ready {
                assert_eq!(e.device.as_deref(), Some("cuda:1"));
                assert_ne!(e.pid, on_one.pid);
                break;
            }
        }
        let after = pool.status();
        let replaced = after.iter().find(|s| s.id == on_one.id).unwrap();
        assert_eq!(replaced.device.as_deref(), Some("cuda:1"));
        assert_eq!(replaced.restarts, 1);
        let answers = answers_of(&pool, &ids);
        let a = &answers[&on_one.id];
        assert_eq!(
            (
                a["FERRY_DEVICE"].as_str(),
                a["CUDA_VISIBLE_DEVICES"].as_str()
            ),
            (Some("cuda:1"), Some("1"))
        );
        assert_eq!(a["pid"], replaced.pid.unwrap());
        pool.shutdown();
    });
}

#[test]
fn without_devices_a_worker_keeps_its_own_settings() {
    with_watchdog(WATCHDOG, || {
        let pool = Pool::start(env_worker_spec(), PoolConfig::default()).unwrap();
        let s = &pool.status()[0];
        assert_eq!(s.device, None);
        let r = pool.call(request("env", json!({})), &[], |_| {}).unwrap();
        assert_eq!(r.data["FERRY_DEVICE"], serde_json::Value::Null);
        assert_eq!(r.data["CUDA_VISIBLE_DEVICES"], "7");
        pool.shutdown();
    });
}

#[test]
fn dropping_an_async_call_cancels_it_at_the_worker_and_frees_its_place() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let config = {
            let mut c = PoolConfig::default();
            c.max_in_flight = 1;
            // Only the cancel can end the step: no restart takes it away, however slow.
            c.cancel_grace = Duration::from_secs(600);
            // No health probe reads the link on the dropped call's behalf.
            c.health_interval = Duration::from_secs(3600);
            c
        };
        let pool = Arc::new(Pool::start(gates.spec("gated", &[]), config).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let caller = pool.clone();
        let call = rt.spawn(async move {
            caller
                .call_async(
                    request("gate", json!({"label": "dropped"})),
                    Vec::new(),
                    CallOptions::default(),
                    |_| {},
                )
                .await
        });
        gates.wait_for("started dropped");
        assert_eq!(pool.status()[0].in_flight, 1);
        // Dropping the call's future (as a server does when its client goes away).
        call.abort();
        gates.wait_for("cancelled dropped");
        // The worker's answer to the cancel is read with nobody waiting for it: the request
        // leaves the worker, whose one place is free again.
        while pool.status()[0].in_flight != 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let reply = rt
            .block_on(pool.call_async(
                request("echo", json!("after")),
                Vec::new(),
                CallOptions::default(),
                |_| {},
            ))
            .unwrap();
        assert_eq!(reply.data, json!("after"));
        assert_eq!(pool.status()[0].restarts, 0, "cancelled, not restarted");
    });
}
