//! `[workers.NAME.pool]`: the engine's [`PoolConfig`] as `ferry.toml` spells it, durations
//! in milliseconds (`request_timeout_ms`), converted when a pool is started.

use ferry::pool::{CancelEscalation, ConfigError, PoolConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[workers.NAME.pool]`. Each key is [`PoolConfig`]'s field of the same name, with `_ms`
/// after the durations; the defaults are [`PoolConfig::default`]'s.
///
/// ```
/// use ferry_server::config::PoolSection;
/// use std::time::Duration;
///
/// let section: PoolSection = toml::from_str("max_workers = 4\nrequest_timeout_ms = 1500")?;
/// let config = section.to_config();
/// assert_eq!(config.max_workers, 4);
/// assert_eq!(config.request_timeout, Duration::from_millis(1500));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSection {
    /// [`PoolConfig::min_workers`].
    pub min_workers: usize,
    /// [`PoolConfig::max_workers`].
    pub max_workers: usize,
    /// [`PoolConfig::max_in_flight`].
    pub max_in_flight: usize,
    /// [`PoolConfig::queue_capacity`].
    pub queue_capacity: usize,
    /// [`PoolConfig::request_timeout`], in milliseconds.
    pub request_timeout_ms: u64,
    /// [`PoolConfig::health_interval`], in milliseconds.
    pub health_interval_ms: u64,
    /// [`PoolConfig::health_timeout`], in milliseconds.
    pub health_timeout_ms: u64,
    /// [`PoolConfig::restart_backoff`], in milliseconds.
    pub restart_backoff_ms: u64,
    /// [`PoolConfig::restart_backoff_max`], in milliseconds.
    pub restart_backoff_max_ms: u64,
    /// [`PoolConfig::restart_reset_after`], in milliseconds.
    pub restart_reset_after_ms: u64,
    /// [`PoolConfig::breaker_failure_threshold`].
    pub breaker_failure_threshold: u32,
    /// [`PoolConfig::breaker_open`], in milliseconds.
    pub breaker_open_ms: u64,
    /// [`PoolConfig::retry_max_attempts`].
    pub retry_max_attempts: u32,
    /// [`PoolConfig::retry_backoff`], in milliseconds.
    pub retry_backoff_ms: u64,
    /// [`PoolConfig::retry_budget_ratio`].
    pub retry_budget_ratio: f64,
    /// [`PoolConfig::retry_budget_min`].
    pub retry_budget_min: u32,
    /// [`PoolConfig::idempotent_operations`].
    pub idempotent_operations: Vec<String>,
    /// [`PoolConfig::idle_timeout`], in milliseconds.
    pub idle_timeout_ms: u64,
    /// [`PoolConfig::scale_up_queue_depth`].
    pub scale_up_queue_depth: usize,
    /// [`PoolConfig::cancel_grace`], in milliseconds.
    pub cancel_grace_ms: u64,
    /// [`PoolConfig::cancel_escalation`].
    pub cancel_escalation: CancelEscalation,
    /// [`PoolConfig::devices`]: a list of names (`["cuda:0", "cuda:1"]`) or a count of
    /// GPUs (`2` meaning `cuda:0` and `cuda:1`).
    pub devices: Devices,
    /// [`PoolConfig::async_lead`], in microseconds.
    pub async_lead_us: u64,
}

/// `devices` of a pool section: names, or a count of GPUs.
///
/// ```
/// use ferry_server::config::PoolSection;
///
/// let by_count: PoolSection = toml::from_str("devices = 2")?;
/// let by_name: PoolSection = toml::from_str(r#"devices = ["cuda:0", "cuda:1"]"#)?;
/// assert_eq!(by_count.to_config().devices, by_name.to_config().devices);
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a list of device names or a count of GPUs")]
pub enum Devices {
    /// `cuda:0` to `cuda:{N - 1}`.
    Count(usize),
    /// These names.
    Names(Vec<String>),
}

impl Default for Devices {
    fn default() -> Self {
        Devices::Names(Vec::new())
    }
}

impl Devices {
    /// The names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Devices::Count(n) => (0..*n).map(|i| format!("cuda:{i}")).collect(),
            Devices::Names(names) => names.clone(),
        }
    }
}

/// Whole milliseconds (durations past `u64::MAX` ms saturate).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&PoolConfig> for PoolSection {
    fn from(c: &PoolConfig) -> Self {
        PoolSection {
            min_workers: c.min_workers,
            max_workers: c.max_workers,
            max_in_flight: c.max_in_flight,
            queue_capacity: c.queue_capacity,
            request_timeout_ms: millis(c.request_timeout),
            health_interval_ms: millis(c.health_interval),
            health_timeout_ms: millis(c.health_timeout),
            restart_backoff_ms: millis(c.restart_backoff),
            restart_backoff_max_ms: millis(c.restart_backoff_max),
            restart_reset_after_ms: millis(c.restart_reset_after),
            breaker_failure_threshold: c.breaker_failure_threshold,
            breaker_open_ms: millis(c.breaker_open),
            retry_max_attempts: c.retry_max_attempts,
            retry_backoff_ms: millis(c.retry_backoff),
            retry_budget_ratio: c.retry_budget_ratio,
            retry_budget_min: c.retry_budget_min,
            idempotent_operations: c.idempotent_operations.clone(),
            idle_timeout_ms: millis(c.idle_timeout),
            scale_up_queue_depth: c.scale_up_queue_depth,
            cancel_grace_ms: millis(c.cancel_grace),
            cancel_escalation: c.cancel_escalation,
            devices: Devices::Names(c.devices.clone()),
            async_lead_us: u64::try_from(c.async_lead.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection::from(&PoolConfig::default())
    }
}

impl PoolSection {
    /// The engine's settings.
    pub fn to_config(&self) -> PoolConfig {
        let ms = Duration::from_millis;
        let mut c = PoolConfig::default()
            .workers(self.min_workers, self.max_workers)
            .max_in_flight(self.max_in_flight)
            .queue_capacity(self.queue_capacity)
            .request_timeout(ms(self.request_timeout_ms))
            .idempotent_operations(self.idempotent_operations.iter().cloned());
        c.health_interval = ms(self.health_interval_ms);
        c.health_timeout = ms(self.health_timeout_ms);
        c.restart_backoff = ms(self.restart_backoff_ms);
        c.restart_backoff_max = ms(self.restart_backoff_max_ms);
        c.restart_reset_after = ms(self.restart_reset_after_ms);
        c.breaker_failure_threshold = self.breaker_failure_threshold;
        c.breaker_open = ms(self.breaker_open_ms);
        c.retry_max_attempts = self.retry_max_attempts;
        c.retry_backoff = ms(self.retry_backoff_ms);
        c.retry_budget_ratio = self.retry_budget_ratio;
        c.retry_budget_min = self.retry_budget_min;
        c.idle_timeout = ms(self.idle_timeout_ms);
        c.scale_up_queue_depth = self.scale_up_queue_depth;
        c.cancel_grace = ms(self.cancel_grace_ms);
        c.cancel_escalation = self.cancel_escalation;
        c.devices = self.devices.names();
        c.async_lead = Duration::from_micros(self.async_lead_us);
        c
    }

    /// Refuses settings that cannot work; the error's key is this section's (`_ms` after
    /// the durations).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.devices == Devices::Count(0) {
            return Err(ConfigError {
                key: "devices",
                reason: "a count of GPUs must be at least 1 (leave `devices` out for none)".into(),
            });
        }
        self.to_config().validate().map_err(|mut e| {
            e.key = toml_key(e.key);
            e
        })
    }
}

/// The `ferry.toml` key of a [`PoolConfig`] field.
fn toml_key(field: &'static str) -> &'static str {
    match field {
        "request_timeout" => "request_timeout_ms",
        "health_interval" => "health_interval_ms",
        "health_timeout" => "health_timeout_ms",
        "restart_backoff" => "restart_backoff_ms",
        "restart_backoff_max" => "restart_backoff_max_ms",
        "restart_reset_after" => "restart_reset_after_ms",
        "breaker_open" => "breaker_open_ms",
        "retry_backoff" => "retry_backoff_ms",
        "idle_timeout" => "idle_timeout_ms",
        "cancel_grace" => "cancel_grace_ms",
        "async_lead" => "async_lead_us",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_engines() {
        assert_eq!(PoolSection::default().to_config(), PoolConfig::default());
        assert_eq!(PoolSection::default().request_timeout_ms, 60_000);
    }

    #[test]
    fn every_key_reaches_the_engine() {
        let text = r#"
            min_workers = 2
            max_workers = 3
            max_in_flight = 4
            queue_capacity = 5
            request_timeout_ms = 6
            health_interval_ms = 7
            health_timeout_ms = 8
            restart_backoff_ms = 9
            restart_backoff_max_ms = 10
            restart_reset_after_ms = 11
            breaker_failure_threshold = 12
            breaker_open_ms = 13
            retry_max_attempts = 14
            retry_backoff_ms = 15
            retry_budget_ratio = 0.5
            retry_budget_min = 16
            idempotent_operations = ["echo"]
            idle_timeout_ms = 17
            scale_up_queue_depth = 18
            cancel_grace_ms = 19
            cancel_escalation = "ignore"
            async_lead_us = 20
        "#;
        let section: PoolSection = toml::from_str(text).unwrap();
        let c = section.to_config();
        let ms = Duration::from_millis;
        assert_eq!((c.min_workers, c.max_workers, c.max_in_flight), (2, 3, 4));
        assert_eq!(c.queue_capacity, 5);
        assert_eq!(
            [
                c.request_timeout,
                c.health_interval,
                c.health_timeout,
                c.restart_backoff,
                c.restart_backoff_max,
                c.restart_reset_after,
            ],
            [ms(6), ms(7), ms(8), ms(9), ms(10), ms(11)]
        );
        assert_eq!(c.breaker_failure_threshold, 12);
        assert_eq!(c.breaker_open, ms(13));
        assert_eq!((c.retry_max_attempts, c.retry_backoff), (14, ms(15)));
        assert_eq!((c.retry_budget_ratio, c.retry_budget_min), (0.5, 16));
        assert_eq!(c.idempotent_operations, ["echo"]);
        assert_eq!((c.idle_timeout, c.scale_up_queue_depth), (ms(17), 18));
        assert_eq!(c.cancel_grace, ms(19));
        assert_eq!(c.cancel_escalation, CancelEscalation::Ignore);
        assert_eq!(c.async_lead, Duration::from_micros(20));
        // And back: the section is the config's, key for key.
        assert_eq!(PoolSection::from(&c), section);
    }

    #[test]
    fn devices_are_names_or_a_count() {
        let section: PoolSection = toml::from_str("devices = 3").unwrap();
        assert_eq!(section.to_config().devices, ["cuda:0", "cuda:1", "cuda:2"]);
        let section: PoolSection = toml::from_str(r#"devices = ["cuda:1", "cpu"]"#).unwrap();
        assert_eq!(section.to_config().devices, ["cuda:1", "cpu"]);
        assert_eq!(PoolSection::from(&section.to_config()), section);
        let err = toml::from_str::<PoolSection>(r#"devices = "cuda:0""#).unwrap_err();
        assert!(
            err.to_string()
                .contains("a list of device names or a count"),
            "{err}"
        );
        for bad in [
            "devices = 0",
            r#"devices = ["cuda:0", "cuda:0"]"#,
            r#"devices = ["gpu one"]"#,
        ] {
            let section: PoolSection = toml::from_str(bad).unwrap();
            assert_eq!(section.validate().unwrap_err().key, "devices", "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<PoolSection>("max_workerz = 2").unwrap_err();
        assert!(err.to_string().contains("max_workerz"));
    }

    #[test]
    fn refusals_name_the_toml_key() {
        let section = PoolSection {
            health_interval_ms: 0,
            ..PoolSection::default()
        };
        assert_eq!(section.validate().unwrap_err().key, "health_interval_ms");
        let section = PoolSection {
            max_workers: 0,
            ..PoolSection::default()
        };
        assert_eq!(section.validate().unwrap_err().key, "max_workers");
    }
}
