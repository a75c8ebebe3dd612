//! The retry budget: retries may add at most a fixed share of load.
//!
//! A token bucket: each request served deposits `ratio` tokens, each retry takes one; the
//! bucket holds at least `min` tokens' worth of burst and at most `min + 100 * ratio`.
//! During an outage, retries stop once the budget is spent instead of multiplying the load.

/// The retry budget of one pool.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: f64,
    ratio: f64,
    cap: f64,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(ratio: f64, min: u32) -> Self {
        let cap = f64::from(min) + 100.0 * ratio;
        RetryBudget {
            tokens: cap,
            ratio,
            cap,
        }
    }

    /// A request was made.
    pub fn deposit(&mut self) {
        self.tokens = (self.tokens + self.ratio).min(self.cap);
    }

    /// Takes one retry's worth; `false` when the budget is spent.
    pub fn withdraw(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_when_spent_and_resume_with_traffic() {
        let mut b = RetryBudget::new(0.5, 2);
        let burst = (0..1000).take_while(|_| b.withdraw()).count();
        assert_eq!(burst, 52);
        assert!(!b.withdraw());
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }
}
