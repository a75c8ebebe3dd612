//! Throughput with many requests in flight on one worker connection.
//!
//! `depth` host threads share one [`Connection`](ferry::connection::Connection) and each
//! calls in a loop, so up to `depth` requests are in flight at once (the connection's
//! leader/follower reading: one waiting caller reads for all). Figures are completed calls
//! per second and the latency each caller saw.

use super::measure::{new_histogram, Limits};
use super::{BenchError, EnginePeer};
use ferry::protocol::now_timestamp;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Figures of one pipelined run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PipelinedStats {
    /// Requests in flight at once (caller threads).
    pub depth: usize,
    /// Calls completed in the timed part.
    pub calls: u64,
    /// Completed calls per second.
    pub throughput_per_s: f64,
    /// Median latency a caller saw.
    pub p50_us: f64,
    /// 99th percentile latency a caller saw.
    pub p99_us: f64,
    /// Mean latency a caller saw.
    pub mean_us: f64,
}

/// Runs `limits.warmup` calls, then `limits.iterations` calls (or until `limits.max_time`)
/// with `depth` in flight, each echoing `payload`.
pub fn pipelined(
    peer: &EnginePeer,
    payload: &[u8],
    depth: usize,
    limits: &Limits,
) -> Result<PipelinedStats, BenchError> {
    let depth = depth.max(1);
    let warm = run(peer, payload, depth, limits.warmup, limits.max_time / 10)?;
    drop(warm);
    let started = Instant::now();
    let hist = run(peer, payload, depth, limits.iterations, limits.max_time)?;
    let elapsed = started.elapsed().as_secs_f64();
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(PipelinedStats {
        depth,
        calls: hist.len(),
        throughput_per_s: if elapsed > 0.0 {
            hist.len() as f64 / elapsed
        } else {
            0.0
        },
        p50_us: us(hist.value_at_quantile(0.5)),
        p99_us: us(hist.value_at_quantile(0.99)),
        mean_us: hist.mean() / 1000.0,
    })
}

fn run(
    peer: &EnginePeer,
    payload: &[u8],
    depth: usize,
    calls: u64,
    max_time: Duration,
) -> Result<hdrhistogram::Histogram<u64>, BenchError> {
    let issued = AtomicU64::new(0);
    let stop_at = Instant::now() + max_time;
    let conn = peer.worker().connection();
    let per_thread = std::thread::scope(|s| {
        let handles: Vec<_> = (0..depth)
            .map(|_| {
                s.spawn(|| -> Result<_, BenchError> {
                    let mut hist = new_histogram();
                    while issued.fetch_add(1, Ordering::Relaxed) < calls && Instant::now() < stop_at
                    {
                        let (mut request, attachments) = peer.request(payload)?;
                        request.timestamp = Some(now_timestamp());
                        let before = Instant::now();
                        let reply = conn
                            .start(request, &attachments, peer.deadline())
                            .and_then(|pending| pending.wait(|_| {}))
                            .map_err(|e| peer.call_error(e))?;
                        hist.saturating_record(before.elapsed().as_nanos().max(1) as u64);
                        peer.check(&reply, payload, false)?;
                    }
                    Ok(hist)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Harness("a caller thread panicked".into())))
            })
            .collect::<Vec<_>>()
    });
    let mut total = new_histogram();
    for hist in per_thread {
        total
            .add(hist?)
            .map_err(|e| BenchError::Harness(format!("histogram: {e}")))?;
    }
    Ok(total)
}
