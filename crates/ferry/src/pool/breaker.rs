//! The circuit breaker of one worker type: fail fast while the type keeps failing.
//!
//! Closed: failures (a worker crash, a failed start) are counted; a served request resets
//! the count. At `threshold` consecutive failures it opens: calls fail at once with
//! `unavailable` and no worker is restarted. After `open_for` it is half-open: one probe
//! worker is started; if it becomes ready the breaker closes, if it fails it opens again.

use std::time::{Duration, Instant};

/// The breaker's state, as reported in status and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests fail fast until the instant.
    Open,
    /// One probe is being tried.
    HalfOpen,
}

/// What a state change means for the caller (to publish as an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// It opened.
    Opened,
    /// It closed.
    Closed,
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold,
            open_for,
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until && !self.probing => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether calls may proceed at `now`.
    pub fn allows_calls(&self, now: Instant) -> bool {
        self.state(now) == BreakerState::Closed
    }

    /// Whether a worker may be started at `now`; in half-open state only one probe.
    pub fn allows_start(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probing => false,
            BreakerState::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    /// A worker crashed or failed to start.
    pub fn record_failure(&mut self, now: Instant) -> Transition {
        self.failures = self.failures.saturating_add(1);
        let was_open = self.open_until.is_some();
        if self.probing || self.failures >= self.threshold {
            self.probing = false;
            self.open_until = Some(now + self.open_for);
            if !was_open {
                return Transition::Opened;
            }
        }
        Transition::None
    }

    /// A worker became ready (closes a half-open breaker).
    pub fn record_ready(&mut self) -> Transition {
        if self.probing {
            self.close()
        } else {
            Transition::None
        }
    }

    /// A request was served (resets the failure count; closes a half-open breaker).
    pub fn record_success(&mut self) -> Transition {
        if self.open_until.is_some() {
            return if self.probing {
                self.close()
            } else {
                Transition::None
            };
        }
        self.failures = 0;
        Transition::None
    }

    fn close(&mut self) -> Transition {
        self.failures = 0;
        self.open_until = None;
        self.probing = false;
        Transition::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_after_a_good_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        assert_eq!(b.record_failure(t0), Transition::None);
        assert_eq!(b.record_failure(t0), Transition::None);
        assert_eq!(b.record_failure(t0), Transition::Opened);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allows_calls(t0) && !b.allows_start(t0));
        let later = t0 + Duration::from_secs(6);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allows_start(later), "one probe");
        assert!(!b.allows_start(later), "only one probe");
        assert_eq!(b.record_ready(), Transition::Closed);
        assert!(b.allows_calls(later));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(1));
        assert_eq!(b.record_failure(t0), Transition::Opened);
        let t1 = t0 + Duration::from_secs(2);
        assert!(b.allows_start(t1));
        assert_eq!(b.record_failure(t1), Transition::None);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(b.state(t1 + Duration::from_secs(2)), BreakerState::HalfOpen);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record_failure(t0);
        b.record_success();
        assert_eq!(b.record_failure(t0), Transition::None);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }
}
