//! Settings of one worker type's pool.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the pool does when a cancelled request is not answered within `cancel_grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelEscalation {
    /// Restart the worker: it is presumed stuck.
    #[default]
    Restart,
    /// Leave it; the request keeps its place until the worker answers.
    Ignore,
}

/// Settings of one worker type's pool.
///
/// Build it from [`Default`] with the builder methods, or assign fields (a
/// `#[non_exhaustive]` struct cannot be written as a literal outside this crate):
///
/// ```
/// use ferry::pool::PoolConfig;
/// use std::time::Duration;
///
/// let config = PoolConfig::default()
///     .workers(2, 4)
///     .max_in_flight(8)
///     .request_timeout(Duration::from_secs(10));
/// assert!(config.validate().is_ok());
///
/// let mut config = PoolConfig::default();
/// config.health_interval = Duration::from_secs(1);
/// assert!(config.validate().is_ok());
/// ```
///
/// `ferry.toml` spells the durations in milliseconds (`request_timeout_ms`); the server
/// converts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Workers kept running even when idle.
    pub min_workers: usize,
    /// Workers the pool may grow to under queueing.
    pub max_workers: usize,
    /// Requests one worker may have in flight at once.
    pub max_in_flight: usize,
    /// Callers that may wait for a worker; one more is answered `overloaded` at once.
    pub queue_capacity: usize,
    /// Deadline of a request that carries none (queueing included).
    pub request_timeout: Duration,
    /// Time between health checks of a worker.
    pub health_interval: Duration,
    /// A health check not answered in this time marks the worker hung: it is replaced.
    pub health_timeout: Duration,
    /// First restart delay after a crash; doubles with each consecutive crash.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
    /// A worker healthy this long has its restart delay reset.
    pub restart_reset_after: Duration,
    /// Consecutive worker failures (crash, failed start) that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one probe worker is tried.
    pub breaker_open: Duration,
    /// Attempts per request, the first included (retries happen only for retryable errors
    /// of idempotent operations).
    pub retry_max_attempts: u32,
    /// Delay before the first retry; doubles with each further one.
    pub retry_backoff: Duration,
    /// Retries allowed per request served, on average (the retry budget's refill rate).
    pub retry_budget_ratio: f64,
    /// Retries always allowed in a burst, whatever the ratio.
    pub retry_budget_min: u32,
    /// Operations safe to run twice; `*` at the end makes a prefix. `health` and
    /// `capabilities` always are.
    pub idempotent_operations: Vec<String>,
    /// A worker idle this long is stopped when more than `min_workers` run.
    pub idle_timeout: Duration,
    /// Waiting callers that make the pool start another worker (up to `max_workers`).
    pub scale_up_queue_depth: usize,
    /// How long a cancelled request may stay unanswered before `cancel_escalation`.
    pub cancel_grace: Duration,
    /// What to do with a worker that ignores a cancel.
    pub cancel_escalation: CancelEscalation,
    /// Whether [`Pool::start`](super::Pool::start) fails, with the first worker's
    /// [`SpawnError`](crate::worker::SpawnError), when none of its `min_workers` workers
    /// gets ready. Off (the default), a pool whose workers fail to start is returned all
    /// the same and its supervisor keeps restarting them (calls wait, or fail fast once the
    /// breaker opens): what a server with several worker types wants.
    pub strict_start: bool,
    /// The devices the pool's workers are spread over, one each (empty, the default: no
    /// device is assigned and the workers choose their own). Names are `cuda:N` (the
    /// worker gets `CUDA_VISIBLE_DEVICES=N`, so it sees only that GPU) or any other name
    /// (`cpu`, `mps`, ...; the worker gets no `CUDA_VISIBLE_DEVICES`); every worker also
    /// gets [`FERRY_DEVICE`](crate::protocol::env::FERRY_DEVICE) holding the name.
    ///
    /// A new worker takes the device the fewest live workers hold, the first listed among
    /// equals: with more workers than devices they are shared round-robin. A worker keeps
    /// its device for life: its replacements (after a crash, a failed health check or a
    /// restart request) get the same one.
    pub devices: Vec<String>,
    /// How long an async call ([`Pool::call_async`](super::Pool::call_async),
    /// [`Pool::send_async`](super::Pool::send_async)) reads the worker's link on its own
    /// thread after sending, before the connection's reader thread takes over: an answer
    /// within it costs no thread hop (the HTTP path's echo is answered well inside the
    /// default 50 µs), but the executor thread is blocked that long once per call whose
    /// answer is slower. Zero: the reader thread reads from the start. At most 10 ms.
    /// On a pipe, a lead of a few milliseconds made the async call as cheap in CPU as a
    /// synchronous one on the project's VM (a short `poll` timeout costs timer work in the
    /// kernel; docs/benchmarks.md, "fifth round"): worth it where calls are short and the
    /// executor has threads to spare, not where slow answers would hold them.
    pub async_lead: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_workers: 1,
            max_workers: 1,
            max_in_flight: 1,
            queue_capacity: 1024,
            request_timeout: ms(60_000),
            health_interval: ms(5_000),
            health_timeout: ms(2_000),
            restart_backoff: ms(100),
            restart_backoff_max: ms(10_000),
            restart_reset_after: ms(30_000),
            breaker_failure_threshold: 5,
            breaker_open: ms(5_000),
            retry_max_attempts: 3,
            retry_backoff: ms(10),
            retry_budget_ratio: 0.2,
            retry_budget_min: 10,
            idempotent_operations: Vec::new(),
            idle_timeout: ms(60_000),
            scale_up_queue_depth: 1,
            cancel_grace: ms(5_000),
            cancel_escalation: CancelEscalation::Restart,
            strict_start: false,
            devices: Vec::new(),
            async_lead: Duration::from_micros(50),
        }
    }
}

/// Builder methods for the settings an embedder sets most; the others are fields.
impl PoolConfig {
    /// Sets [`min_workers`](Self::min_workers) and [`max_workers`](Self::max_workers).
    pub fn workers(mut self, min: usize, max: usize) -> Self {
        self.min_workers = min;
        self.max_workers = max;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn queue_capacity(mut self, callers: usize) -> Self {
        self.queue_capacity = callers;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`idempotent_operations`](Self::idempotent_operations).
    pub fn idempotent_operations<I, S>(mut self, operations: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.idempotent_operations = operations.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`strict_start`](Self::strict_start).
    pub fn strict_start(mut self, strict: bool) -> Self {
        self.strict_start = strict;
        self
    }

    /// Sets [`devices`](Self::devices) to these names.
    ///
    /// ```
    /// use ferry::pool::PoolConfig;
    /// let config = PoolConfig::default().workers(2, 2).devices(["cuda:0", "cuda:1"]);
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn devices<I, S>(mut self, devices: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.devices = devices.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`devices`](Self::devices) to the first `count` GPUs, `cuda:0` to
    /// `cuda:{count - 1}` (0: none).
    ///
    /// ```
    /// use ferry::pool::PoolConfig;
    /// assert_eq!(PoolConfig::default().device_count(2).devices, ["cuda:0", "cuda:1"]);
    /// ```
    pub fn device_count(self, count: usize) -> Self {
        self.devices((0..count).map(|i| format!("cuda:{i}")))
    }
}

/// The longest device name taken (it goes into the environment, status and metrics).
pub const MAX_DEVICE_NAME: usize = 64;

/// Why `name` cannot be a device name, if it cannot.
fn device_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_DEVICE_NAME {
        return Some(format!(
            "device names are 1 to {MAX_DEVICE_NAME} characters, not {:?}",
            name
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
    {
        return Some(format!(
            "{name:?}: a device name is letters, digits and `:_-.`"
        ));
    }
    if let Some(index) = name.strip_prefix("cuda:") {
        if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
            return Some(format!("{name:?}: expected `cuda:N`, N a GPU index"));
        }
    }
    None
}

/// The environment a worker on `device` gets: `FERRY_DEVICE`, and for `cuda:N`
/// `CUDA_VISIBLE_DEVICES=N`.
pub(crate) fn device_env(device: &str) -> Vec<(String, String)> {
    let mut env = vec![(
        crate::protocol::env::FERRY_DEVICE.to_owned(),
        device.to_owned(),
    )];
    if let Some(index) = device.strip_prefix("cuda:") {
        env.push(("CUDA_VISIBLE_DEVICES".to_owned(), index.to_owned()));
    }
    env
}

/// A setting that cannot work, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The key, e.g. `max_workers`.
    pub key: &'static str,
    /// Why it is refused.
    pub reason: String,
}

/// The longest [`PoolConfig::async_lead`].
const MAX_ASYNC_LEAD: Duration = Duration::from_millis(10);

const fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl PoolConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.max_workers == 0 {
            return bad("max_workers", "must be at least 1");
        }
        if self.min_workers > self.max_workers {
            return bad("min_workers", "must not exceed max_workers");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.retry_max_attempts == 0 {
            return bad(
                "retry_max_attempts",
                "must be at least 1 (the first attempt)",
            );
        }
        if self.breaker_failure_threshold == 0 {
            return bad("breaker_failure_threshold", "must be at least 1");
        }
        if self.health_interval.is_zero() || self.health_timeout.is_zero() {
            return bad(
                "health_interval",
                "health interval and timeout must be positive",
            );
        }
        if !(self.retry_budget_ratio >= 0.0 && self.retry_budget_ratio.is_finite()) {
            return bad("retry_budget_ratio", "must be a non-negative number");
        }
        if self.async_lead > MAX_ASYNC_LEAD {
            return bad(
                "async_lead",
                "must be at most 10 ms: it blocks an executor thread while it lasts",
            );
        }
        for (i, name) in self.devices.iter().enumerate() {
            if let Some(problem) = device_name_problem(name) {
                return bad("devices", &problem);
            }
            if self.devices[..i].contains(name) {
                return bad("devices", &format!("{name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// Whether `operation` may be retried.
    pub fn is_idempotent(&self, operation: &str) -> bool {
        matches!(operation, "health" | "capabilities")
            || self
                .idempotent_operations
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => operation.starts_with(prefix),
                    None => p == operation,
                })
    }

    /// The delay before retry number `retry` (0 for the first).
    pub(crate) fn retry_delay(&self, retry: u32) -> Duration {
        self.retry_backoff.saturating_mul(1u32 << retry.min(16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PoolConfig::default().validate().unwrap();
    }

    #[test]
    fn impossible_settings_name_their_key() {
        let c = PoolConfig::default().workers(3, 2);
        assert_eq!(c.validate().unwrap_err().key, "min_workers");
        let c = PoolConfig::default().max_in_flight(0);
        assert_eq!(c.validate().unwrap_err().key, "max_in_flight");
        let mut c = PoolConfig {
            async_lead: Duration::from_millis(11),
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "async_lead");
        c.async_lead = Duration::ZERO;
        c.validate().unwrap();
        let c = PoolConfig {
            health_timeout: Duration::ZERO,
            ..PoolConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "health_interval");
    }

    #[test]
    fn device_lists_are_checked() {
        for bad in [
            vec!["cuda:0", "cuda:0"],
            vec![""],
            vec!["cuda:"],
            vec!["cuda:x"],
            vec!["gpu 1"],
        ] {
            let c = PoolConfig::default().devices(bad.clone());
            assert_eq!(c.validate().unwrap_err().key, "devices", "{bad:?}");
        }
        let c = PoolConfig::default().devices(["cuda:1", "cpu", "mps"]);
        c.validate().unwrap();
        assert_eq!(
            device_env("cuda:1"),
            [
                ("FERRY_DEVICE".to_owned(), "cuda:1".to_owned()),
                ("CUDA_VISIBLE_DEVICES".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(device_env("cpu").len(), 1);
    }

    #[test]
    fn idempotent_patterns_match_prefixes() {
        let c = PoolConfig::default().idempotent_operations(["echo", "model.*"]);
        assert!(
            c.is_idempotent("echo") && c.is_idempotent("model.list") && c.is_idempotent("health")
        );
        assert!(!c.is_idempotent("inference") && !c.is_idempotent("echoes"));
    }

    #[test]
    fn retry_delays_double_and_saturate() {
        let c = PoolConfig::default();
        assert_eq!(c.retry_delay(0), ms(10));
        assert_eq!(c.retry_delay(2), ms(40));
        let mut c = c;
        c.retry_backoff = Duration::MAX;
        assert_eq!(c.retry_delay(3), Duration::MAX);
    }
}
