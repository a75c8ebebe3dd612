//! A snapshot of one worker, for `/api/workers/status` and embedding hosts.

use serde::Serialize;
use serde_json::Value;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Its process is starting (before `ready`).
    Starting,
    /// Serving.
    Ready,
    /// Failed a health check; being replaced.
    Unhealthy,
    /// Crashed; waiting out its restart delay.
    Restarting,
    /// Being stopped.
    Stopping,
    /// Stopped for good.
    Stopped,
}

/// A snapshot of one worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// The worker id (stable across restarts).
    pub id: String,
    /// Its worker type.
    pub worker_type: String,
    /// Its state.
    pub state: WorkerState,
    /// The current process id.
    pub pid: Option<u32>,
    /// Requests it has in flight.
    pub in_flight: usize,
    /// Requests it has answered (all its processes).
    pub requests_served: u64,
    /// How many times it was restarted.
    pub restarts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Seconds since its current process became ready.
    pub uptime_s: Option<f64>,
    /// The device the pool assigned it ([`PoolConfig::devices`](super::PoolConfig::devices)),
    /// if any.
    pub device: Option<String>,
    /// The resident memory of its current process in MiB, read by the host from
    /// `/proc/PID/status` (absent where that cannot be read, e.g. off Linux).
    pub memory_rss_mb: Option<f64>,
    /// What the worker last reported of itself in a `status_change` event, if it did.
    pub telemetry: Option<WorkerTelemetry>,
}

/// What a worker reports of itself in a `status_change` event (data
/// `{"worker_id", "status", "device", "memory_usage_mb", "gpu_utilization"}`, every field
/// optional). Fields of the wrong type are dropped, not refused.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WorkerTelemetry {
    /// Its status in its own words (`loading`, `busy`, `idle`, ...).
    pub status: Option<String>,
    /// The device it runs on, as it names it (e.g. `cuda:0`, `cpu`).
    pub device: Option<String>,
    /// Memory in use, MiB: the device's for a GPU worker, else the process's resident set.
    pub memory_usage_mb: Option<f64>,
    /// GPU utilization in percent, where the device reports it.
    pub gpu_utilization: Option<f64>,
}

/// Longest text kept from a worker's report (status, device).
const MAX_REPORTED_TEXT: usize = 64;

impl WorkerTelemetry {
    /// The telemetry in a `status_change` event's data, and the worker id it names.
    pub(crate) fn from_event(data: &Value) -> (Option<&str>, WorkerTelemetry) {
        let text = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .filter(|s| s.len() <= MAX_REPORTED_TEXT)
                .map(str::to_owned)
        };
        let number = |key: &str| {
            data.get(key)
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite() && *n >= 0.0)
        };
        let telemetry = WorkerTelemetry {
            status: text("status"),
            device: text("device"),
            memory_usage_mb: number("memory_usage_mb"),
            gpu_utilization: number("gpu_utilization"),
        };
        (data.get("worker_id").and_then(Value::as_str), telemetry)
    }
}

/// The resident set of process `pid` in MiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn telemetry_keeps_what_is_well_typed() {
        let event = json!({
            "worker_id": "sdxl-1", "status": "loading", "device": 3,
            "memory_usage_mb": 512.5, "gpu_utilization": -1
        });
        let (id, t) = WorkerTelemetry::from_event(&event);
        assert_eq!(id, Some("sdxl-1"));
        assert_eq!(t.status.as_deref(), Some("loading"));
        assert_eq!(
            (t.device, t.memory_usage_mb, t.gpu_utilization),
            (None, Some(512.5), None)
        );
        let event = json!("not an object");
        let (id, t) = WorkerTelemetry::from_event(&event);
        assert_eq!((id, t), (None, WorkerTelemetry::default()));
    }

    #[test]
    fn own_rss_is_read() {
        if cfg!(target_os = "linux") {
            assert!(rss_mb(std::process::id()).is_some_and(|mb| mb > 0.0));
        }
    }
}
