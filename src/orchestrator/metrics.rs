//! Request counts and latency histograms, rendered as Prometheus text.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Labels of one series: worker type, operation, transport.
type Key = (String, String, String);

/// The server's request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Key, &'static str), u64>>,
    latency: Mutex<BTreeMap<Key, Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one finished request; `outcome` is `ok` or an error code.
    pub fn record(
        &self,
        worker_type: &str,
        operation: &str,
        transport: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let key = (
            worker_type.to_owned(),
            operation.to_owned(),
            transport.to_owned(),
        );
        *self
            .requests
            .lock()
            .entry((key.clone(), outcome))
            .or_insert(0) += 1;
        let secs = took.as_secs_f64();
        let mut latency = self.latency.lock();
        let h = latency.entry(key).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Renders the request series (pool gauges are appended by the caller).
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP ferry_requests_total Requests answered, by worker type, operation, transport and outcome.\n");
        out.push_str("# TYPE ferry_requests_total counter\n");
        for (((wt, op, tr), outcome), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "ferry_requests_total{{worker_type=\"{}\",operation=\"{}\",transport=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(wt),
                escape(op),
                escape(tr)
            );
        }
        out.push_str("# HELP ferry_request_duration_seconds Time from the API receiving a request to its answer.\n");
        out.push_str("# TYPE ferry_request_duration_seconds histogram\n");
        for ((wt, op, tr), h) in self.latency.lock().iter() {
            let labels = format!(
                "worker_type=\"{}\",operation=\"{}\",transport=\"{}\"",
                escape(wt),
                escape(op),
                escape(tr)
            );
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ferry_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "ferry_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ferry_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ferry_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}
