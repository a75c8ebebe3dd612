//! Restart delays: exponential, reset after a healthy period.

use std::time::{Duration, Instant};

/// The restart delay of one worker slot.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    consecutive: u32,
}

impl Backoff {
    /// A backoff starting at `base`, doubling up to `max`, reset once a worker stayed
    /// healthy for `reset_after`.
    pub fn new(base: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff {
            base,
            max,
            reset_after,
            consecutive: 0,
        }
    }

    /// The delay before the next restart, given when the failed worker became ready
    /// (`None`: it never did). Counts the failure.
    pub fn next_delay(&mut self, ready_since: Option<Instant>, now: Instant) -> Duration {
        if ready_since.is_some_and(|since| now.saturating_duration_since(since) >= self.reset_after)
        {
            self.consecutive = 0;
        }
        let delay = self
            .base
            .saturating_mul(1u32 << self.consecutive.min(20))
            .min(self.max);
        self.consecutive = self.consecutive.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_and_resets_after_a_healthy_period() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), ms(30_000));
        let t0 = Instant::now();
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(None, t0)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        let healthy_since = t0;
        let later = t0 + ms(31_000);
        assert_eq!(b.next_delay(Some(healthy_since), later), ms(100));
    }
}
