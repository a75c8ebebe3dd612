//! Request counts and latency histograms, rendered as Prometheus text.
//!
//! Label values are bounded: a worker type or operation that is not configured is
//! recorded as `other`, so clients cannot grow the page by inventing names.

use crate::config::FerryConfig;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
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

/// The label value standing for any worker type or operation that is not configured.
const OTHER: &str = "other";

/// The operations the SDXL routes call on `server.sdxl_worker_type`.
const SDXL_OPERATIONS: [&str; 5] = [
    "inference.generate",
    "inference.estimate",
    "inference.capabilities",
    "scheduler.list",
    "conditioning.controlnet_types",
];

/// The operations of each worker type that get their own series: the pool's
/// `idempotent_operations`, the operations of the workflow steps calling the type, and,
/// for `server.sdxl_worker_type`, the operations the SDXL routes call.
pub fn known_operations(config: &FerryConfig) -> BTreeMap<String, BTreeSet<String>> {
    let mut known: BTreeMap<String, BTreeSet<String>> = config
        .workers
        .iter()
        .map(|(name, w)| {
            let ops = w
                .pool
                .idempotent_operations
                .iter()
                .cloned()
                .chain(w.exact_api_operations().map(str::to_owned))
                .collect();
            (name.clone(), ops)
        })
        .collect();
    for step in config.workflows.iter().flat_map(|w| &w.steps) {
        if let Some(ops) = known.get_mut(&step.worker_type) {
            ops.insert(step.operation.clone());
        }
    }
    if let Some(ops) = known.get_mut(&config.server.sdxl_worker_type) {
        ops.extend(SDXL_OPERATIONS.iter().map(|op| (*op).to_owned()));
    }
    known
}

/// The server's request metrics.
#[derive(Default)]
pub struct Metrics {
    known: BTreeMap<String, BTreeSet<String>>,
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
    /// Metrics that give a series of its own to each operation in `known` (by worker
    /// type); every other worker type or operation is recorded as `other`.
    pub fn new(known: BTreeMap<String, BTreeSet<String>>) -> Self {
        Metrics {
            known,
            ..Metrics::default()
        }
    }

    /// The `worker_type` and `operation` label values of a request.
    fn labels<'a>(&self, worker_type: &'a str, operation: &'a str) -> (&'a str, &'a str) {
        match self.known.get(worker_type) {
            Some(ops) if ops.contains(operation) => (worker_type, operation),
            Some(_) => (worker_type, OTHER),
            None => (OTHER, OTHER),
        }
    }

    /// Records one finished request; `outcome` is `ok` or an error code.
    pub fn record(
        &self,
        worker_type: &str,
        operation: &str,
        transport: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let (worker_type, operation) = self.labels(worker_type, operation);
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

/// Renders the per-worker gauges of `statuses` (each pool's, by worker type): the worker's
/// device (`ferry_worker_info`, 1 per worker, labelled with its device, `none` without
/// one), its process's resident memory, and what it last reported of its device memory and
/// GPU utilization (absent until it reports them). Only live workers are rendered, so the
/// series are bounded by the pools' `max_workers`.
pub(crate) fn render_workers(
    out: &mut String,
    statuses: &[(&String, Vec<ferry::pool::WorkerStatus>)],
) {
    use ferry::pool::WorkerState;
    let live = || {
        statuses.iter().flat_map(|(wt, list)| {
            list.iter()
                .filter(|s| s.state != WorkerState::Stopped)
                .map(move |s| (wt.as_str(), s))
        })
    };
    let labels = |wt: &str, s: &ferry::pool::WorkerStatus| {
        format!(
            "worker_type=\"{}\",worker_id=\"{}\",device=\"{}\"",
            escape(wt),
            escape(&s.id),
            escape(s.device.as_deref().unwrap_or("none"))
        )
    };
    out.push_str("# HELP ferry_worker_info A live worker and the device the pool assigned it.\n# TYPE ferry_worker_info gauge\n");
    for (wt, s) in live() {
        let _ = writeln!(out, "ferry_worker_info{{{}}} 1", labels(wt, s));
    }
    out.push_str("# HELP ferry_worker_memory_rss_bytes Resident memory of the worker's process, read by the host.\n# TYPE ferry_worker_memory_rss_bytes gauge\n");
    for (wt, s) in live() {
        if let Some(mb) = s.memory_rss_mb {
            let _ = writeln!(
                out,
                "ferry_worker_memory_rss_bytes{{{}}} {}",
                labels(wt, s),
                (mb * 1024.0 * 1024.0).round()
            );
        }
    }
    out.push_str("# HELP ferry_worker_memory_usage_bytes Memory in use as the worker last reported it (its device's for a GPU worker).\n# TYPE ferry_worker_memory_usage_bytes gauge\n");
    for (wt, s) in live() {
        if let Some(mb) = s.telemetry.as_ref().and_then(|t| t.memory_usage_mb) {
            let _ = writeln!(
                out,
                "ferry_worker_memory_usage_bytes{{{}}} {}",
                labels(wt, s),
                (mb * 1024.0 * 1024.0).round()
            );
        }
    }
    out.push_str("# HELP ferry_worker_gpu_utilization_percent GPU utilization as the worker last reported it.\n# TYPE ferry_worker_gpu_utilization_percent gauge\n");
    for (wt, s) in live() {
        if let Some(pct) = s.telemetry.as_ref().and_then(|t| t.gpu_utilization) {
            let _ = writeln!(
                out,
                "ferry_worker_gpu_utilization_percent{{{}}} {pct}",
                labels(wt, s)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_share_the_other_series() {
        let known = BTreeMap::from([("echo".to_owned(), BTreeSet::from(["echo".to_owned()]))]);
        let m = Metrics::new(known);
        let took = Duration::from_millis(1);
        m.record("echo", "echo", "stdio", "ok", took);
        for i in 0..100 {
            m.record(
                "echo",
                &format!("op{i}"),
                "stdio",
                "unknown_operation",
                took,
            );
            m.record(&format!("wt{i}"), "echo", "stdio", "ok", took);
        }
        let mut page = String::new();
        m.render(&mut page);
        assert!(page.contains(
            r#"ferry_requests_total{worker_type="echo",operation="echo",transport="stdio",outcome="ok"} 1"#
        ));
        assert!(page.contains(
            r#"ferry_requests_total{worker_type="echo",operation="other",transport="stdio",outcome="unknown_operation"} 100"#
        ));
        assert!(page.contains(
            r#"ferry_requests_total{worker_type="other",operation="other",transport="stdio",outcome="ok"} 100"#
        ));
        assert!(!page.contains("op1") && !page.contains("wt1"));
    }
}
