//! Settings of one worker type's pool. Durations are milliseconds, as in `ferry.toml`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the pool does when a cancelled request is not answered within `cancel_grace_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelEscalation {
    /// Restart the worker: it is presumed stuck.
    #[default]
    Restart,
    /// Leave it; the request keeps its place until the worker answers.
    Ignore,
}

/// Settings of one worker type's pool.
///
/// ```
/// let config = ferry::pool::PoolConfig { min_workers: 2, max_workers: 4, ..Default::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    pub request_timeout_ms: u64,
    /// Time between health checks of a worker.
    pub health_interval_ms: u64,
    /// A health check not answered in this time marks the worker hung: it is replaced.
    pub health_timeout_ms: u64,
    /// First restart delay after a crash; doubles with each consecutive crash.
    pub restart_backoff_ms: u64,
    /// Largest restart delay.
    pub restart_backoff_max_ms: u64,
    /// A worker healthy this long has its restart delay reset.
    pub restart_reset_after_ms: u64,
    /// Consecutive worker failures (crash, failed start) that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one probe worker is tried.
    pub breaker_open_ms: u64,
    /// Attempts per request, the first included (retries happen only for retryable errors
    /// of idempotent operations).
    pub retry_max_attempts: u32,
    /// Delay before the first retry; doubles with each further one.
    pub retry_backoff_ms: u64,
    /// Retries allowed per request served, on average (the retry budget's refill rate).
    pub retry_budget_ratio: f64,
    /// Retries always allowed in a burst, whatever the ratio.
    pub retry_budget_min: u32,
    /// Operations safe to run twice; `*` at the end makes a prefix. `health` and
    /// `capabilities` always are.
    pub idempotent_operations: Vec<String>,
    /// A worker idle this long is stopped when more than `min_workers` run.
    pub idle_timeout_ms: u64,
    /// Waiting callers that make the pool start another worker (up to `max_workers`).
    pub scale_up_queue_depth: usize,
    /// How long a cancelled request may stay unanswered before `cancel_escalation`.
    pub cancel_grace_ms: u64,
    /// What to do with a worker that ignores a cancel.
    pub cancel_escalation: CancelEscalation,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_workers: 1,
            max_workers: 1,
            max_in_flight: 1,
            queue_capacity: 1024,
            request_timeout_ms: 60_000,
            health_interval_ms: 5_000,
            health_timeout_ms: 2_000,
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 10_000,
            restart_reset_after_ms: 30_000,
            breaker_failure_threshold: 5,
            breaker_open_ms: 5_000,
            retry_max_attempts: 3,
            retry_backoff_ms: 10,
            retry_budget_ratio: 0.2,
            retry_budget_min: 10,
            idempotent_operations: Vec::new(),
            idle_timeout_ms: 60_000,
            scale_up_queue_depth: 1,
            cancel_grace_ms: 5_000,
            cancel_escalation: CancelEscalation::Restart,
        }
    }
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

fn ms(v: u64) -> Duration {
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
        if self.health_interval_ms == 0 || self.health_timeout_ms == 0 {
            return bad(
                "health_interval_ms",
                "health interval and timeout must be positive",
            );
        }
        if !(self.retry_budget_ratio >= 0.0 && self.retry_budget_ratio.is_finite()) {
            return bad("retry_budget_ratio", "must be a non-negative number");
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

    pub(crate) fn request_timeout(&self) -> Duration {
        ms(self.request_timeout_ms)
    }
    pub(crate) fn health_interval(&self) -> Duration {
        ms(self.health_interval_ms)
    }
    pub(crate) fn health_timeout(&self) -> Duration {
        ms(self.health_timeout_ms)
    }
    pub(crate) fn idle_timeout(&self) -> Duration {
        ms(self.idle_timeout_ms)
    }
    pub(crate) fn cancel_grace(&self) -> Duration {
        ms(self.cancel_grace_ms)
    }
    pub(crate) fn retry_backoff(&self, retry: u32) -> Duration {
        ms(self.retry_backoff_ms.saturating_mul(1u64 << retry.min(16)))
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
        let c = PoolConfig {
            min_workers: 3,
            max_workers: 2,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "min_workers");
        let c = PoolConfig {
            max_in_flight: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_in_flight");
    }

    #[test]
    fn idempotent_patterns_match_prefixes() {
        let c = PoolConfig {
            idempotent_operations: vec!["echo".into(), "model.*".into()],
            ..Default::default()
        };
        assert!(
            c.is_idempotent("echo") && c.is_idempotent("model.list") && c.is_idempotent("health")
        );
        assert!(!c.is_idempotent("inference") && !c.is_idempotent("echoes"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<PoolConfig>(r#"{"max_workerz": 2}"#).unwrap_err();
        assert!(err.to_string().contains("max_workerz"));
    }
}
