//! Timing round trips: a warm-up, then timed round trips into an HDR histogram.

use super::{BenchError, RoundTrip};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Timed round trips.
    pub iterations: u64,
    /// Untimed round trips first (fewer if `max_time / 10` runs out).
    pub warmup: u64,
    /// Stop a case early once its timed part has run this long (the count actually timed
    /// is reported), so a large payload on a slow machine cannot stall the suite.
    pub max_time: Duration,
}

impl Limits {
    /// `iterations` timed round trips after a warm-up of a tenth as many (10 to 1,000),
    /// at most `max_time`.
    pub fn new(iterations: u64, max_time: Duration) -> Self {
        Limits {
            iterations: iterations.max(1),
            warmup: (iterations / 10).clamp(10, 1000),
            max_time,
        }
    }
}

/// Latency figures of one measured case, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// Timed round trips.
    pub iterations: u64,
    /// Warm-up round trips done.
    pub warmup: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Fastest.
    pub min_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Round trips per second of the timed part's wall time (one at a time).
    pub throughput_per_s: f64,
}

/// A histogram of nanoseconds from 1 ns to 10 minutes at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    /// Figures of `hist` (nanoseconds), over `elapsed` of wall time.
    pub fn from_histogram(hist: &Histogram<u64>, warmup: u64, elapsed: Duration) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let n = hist.len();
        Stats {
            iterations: n,
            warmup,
            p50_us: us(hist.value_at_quantile(0.50)),
            p99_us: us(hist.value_at_quantile(0.99)),
            p999_us: us(hist.value_at_quantile(0.999)),
            mean_us: hist.mean() / 1000.0,
            min_us: us(hist.min()),
            max_us: us(hist.max()),
            throughput_per_s: if elapsed.is_zero() {
                0.0
            } else {
                n as f64 / elapsed.as_secs_f64()
            },
        }
    }
}

/// Warms `peer` up, then times round trips of `payload`; `progress(done, of)` is called
/// now and then during the timed part.
pub fn measure(
    peer: &mut dyn RoundTrip,
    payload: &[u8],
    limits: &Limits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Stats, BenchError> {
    let mut timed = Timed::new();
    measure_into(peer, payload, limits, &mut timed, &mut |done| {
        progress(done, limits.iterations)
    })?;
    let stats = timed.stats();
    progress(stats.iterations, limits.iterations);
    Ok(stats)
}

/// Round trips of one case gathered over one or more turns ([`measure_into`]): the
/// latencies, the warm-up round trips and the timed wall time of all turns together.
#[derive(Debug, Clone)]
pub struct Timed {
    hist: Histogram<u64>,
    warmup: u64,
    elapsed: Duration,
}

impl Default for Timed {
    fn default() -> Self {
        Self::new()
    }
}

impl Timed {
    /// Nothing timed yet.
    pub fn new() -> Self {
        Timed {
            hist: new_histogram(),
            warmup: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Timed round trips so far.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The figures of every turn together.
    pub fn stats(&self) -> Stats {
        Stats::from_histogram(&self.hist, self.warmup, self.elapsed)
    }
}

/// One turn of [`measure`]: warms `peer` up, then times round trips of `payload` into
/// `timed` (added to what earlier turns put there); `progress(done)` is called now and
/// then with the round trips this turn has timed.
pub fn measure_into(
    peer: &mut dyn RoundTrip,
    payload: &[u8],
    limits: &Limits,
    timed: &mut Timed,
    progress: &mut dyn FnMut(u64),
) -> Result<(), BenchError> {
    let warm_until = Instant::now() + limits.max_time / 10;
    let mut warmup = 0;
    while warmup < limits.warmup && (warmup == 0 || Instant::now() < warm_until) {
        peer.round_trip(payload)?;
        warmup += 1;
    }
    timed.warmup += warmup;
    let started = Instant::now();
    let stop_at = started + limits.max_time;
    let mut last_report = started;
    for i in 0..limits.iterations {
        let before = Instant::now();
        let result = peer.round_trip(payload);
        let after = Instant::now();
        if let Err(e) = result {
            timed.elapsed += after - started;
            return Err(e);
        }
        timed
            .hist
            .saturating_record((after - before).as_nanos().max(1) as u64);
        if after - last_report > Duration::from_millis(100) {
            progress(i + 1);
            last_report = after;
        }
        if after >= stop_at {
            break;
        }
    }
    timed.elapsed += started.elapsed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Instant0;
    impl RoundTrip for Instant0 {
        fn round_trip(&mut self, _payload: &[u8]) -> Result<(), BenchError> {
            Ok(())
        }
    }

    #[test]
    fn counts_iterations_and_orders_percentiles() {
        let limits = Limits::new(200, Duration::from_secs(60));
        let stats = measure(&mut Instant0, b"x", &limits, &mut |_, _| {}).unwrap();
        assert_eq!(stats.iterations, 200);
        assert_eq!(stats.warmup, 20);
        assert!(stats.min_us <= stats.p50_us && stats.p50_us <= stats.p99_us);
        assert!(stats.p99_us <= stats.p999_us && stats.p999_us <= stats.max_us);
    }

    #[test]
    fn stops_at_the_time_limit() {
        let limits = Limits::new(u64::MAX, Duration::ZERO);
        let stats = measure(&mut Instant0, b"x", &limits, &mut |_, _| {}).unwrap();
        assert_eq!(stats.iterations, 1);
    }

    #[test]
    fn turns_add_up_in_one_timed() {
        let limits = Limits::new(30, Duration::from_secs(60));
        let mut timed = Timed::new();
        for _ in 0..3 {
            measure_into(&mut Instant0, b"x", &limits, &mut timed, &mut |_| {}).unwrap();
        }
        let stats = timed.stats();
        assert_eq!(stats.iterations, 90);
        assert_eq!(stats.warmup, 30);
        assert_eq!(timed.count(), 90);
    }
}
