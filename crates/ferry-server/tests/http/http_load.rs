//! Load through the HTTP API (loopback only, bounded): 20,000 requests from 64 concurrent
//! clients to 2 workers, one of which is killed midway. Every request must be answered
//! exactly once. Throughput and latency percentiles are printed, not asserted.

use crate::common;

use common::http::Server;
use common::{with_watchdog, WATCHDOG};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const TOTAL: usize = 20_000;

#[test]
fn twenty_thousand_requests_with_a_worker_killed_midway_each_answered_once() {
    with_watchdog(WATCHDOG * 4, || {
        let config = format!(
            r#"
[server]
bind = "127.0.0.1:0"
[workers.echo]
command = "{}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 2
max_workers = 2
max_in_flight = 8
queue_capacity = 4096
restart_backoff_ms = 10
idempotent_operations = ["echo"]
retry_budget_min = 1000
"#,
            common::ferry_bin()
        );
        let server = Server::start(&config);
        let status = server
            .client()
            .request("GET", "/api/workers/status", None)
            .json();
        let victim = status["workers"][0]["pid"].as_u64().unwrap() as i32;
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let per_client = TOTAL / CLIENTS + 1;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (addr, done) = (server.addr.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut client = common::http::Client::connect(&addr);
                    let mut answers = Vec::new();
                    let mut latencies = Vec::new();
                    for k in 0..per_client {
                        let i = c * per_client + k;
                        if i >= TOTAL {
                            break;
                        }
                        let body = format!(
                            r#"{{"worker_type":"echo","operation":"echo","data":{{"i":{i}}}}}"#
                        );
                        let t = Instant::now();
                        let r = client.request("POST", "/api/inference/generate", Some(&body));
                        latencies.push(t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                        let answer = if r.status == 200 {
                            assert_eq!(r.json()["data"]["i"], i, "answer for the wrong request");
                            Ok(())
                        } else {
                            Err((r.status, r.error_code()))
                        };
                        answers.push((i, answer));
                    }
                    (answers, latencies)
                })
            })
            .collect();
        while done.load(Ordering::Relaxed) < TOTAL / 2 {
            std::thread::sleep(Duration::from_millis(2));
        }
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let mut seen = vec![0u8; TOTAL];
        let mut latencies = Vec::with_capacity(TOTAL);
        let mut failures = Vec::new();
        for c in clients {
            let (answers, lat) = c.join().unwrap();
            latencies.extend(lat);
            for (i, a) in answers {
                seen[i] += 1;
                if let Err(e) = a {
                    failures.push(e);
                }
            }
        }
        let elapsed = started.elapsed();
        assert!(
            seen.iter().all(|&n| n == 1),
            "every request answered exactly once"
        );
        for (status, code) in &failures {
            assert_eq!(
                (*status, code.as_str()),
                (502, "worker_crashed"),
                "only crash answers may fail"
            );
        }
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "http load: {TOTAL} requests, {CLIENTS} clients, 2 workers (one killed at {}): {:.0} req/s, p50 {:?}, p99 {:?}, {} ok, {} worker_crashed",
            TOTAL / 2,
            TOTAL as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            TOTAL - failures.len(),
            failures.len()
        );
        // The killed worker is replaced (the supervisor may still be at it when the last
        // answer arrives: waited for, not assumed).
        let mut c = server.client();
        common::eventually("the killed worker is replaced", || {
            let after = c.request("GET", "/api/workers/status", None).json();
            after["workers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["restarts"].as_u64().unwrap())
                .sum::<u64>()
                >= 1
        });
        drop(c);
        assert!(server.stop().success());
    });
}
