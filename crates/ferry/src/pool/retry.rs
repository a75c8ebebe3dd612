//! Settling an attempt: done, or retried. Only retryable errors of idempotent operations
//! are retried, with backoff, while the deadline allows and the retry budget lasts; a
//! timeout reports the limit the caller was given.

use super::{CallOptions, Inner, Member, PoolError};
use crate::connection::{CallError, Response};
use crate::protocol::{Envelope, ErrorCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

// Why allowed: a short-lived stack value returned once per call; boxing the large variant
// would add an allocation to every call's hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Outcome<T = Response> {
    Done(Result<T, PoolError>),
    Retry(Duration),
}

impl Inner {
    /// When the call must be answered, and the limit it was given (which a timeout
    /// reports: the caller's own deadline, not the pool's default).
    pub(super) fn deadline_for(
        &self,
        request: &Envelope,
        options: &CallOptions,
    ) -> (Instant, Duration) {
        let timeout = options
            .timeout
            .or(request.deadline_ms.map(Duration::from_millis))
            .unwrap_or(self.config.request_timeout);
        (Instant::now() + timeout, timeout)
    }

    pub(super) fn may_retry(&self, request: &Envelope) -> bool {
        self.config.retry_max_attempts > 1
            && self
                .config
                .is_idempotent(request.operation.as_deref().unwrap_or_default())
    }

    pub(super) fn after_call<T>(
        &self,
        member: &Member,
        result: Result<T, CallError>,
        retryable_op: bool,
        attempt: u32,
        deadline: Instant,
        limit: Duration,
    ) -> Outcome<T> {
        // Statistics only: no other memory is published through this counter.
        member.served.fetch_add(1, Ordering::Relaxed);
        let mut d = self.dispatch.lock();
        d.budget.deposit();
        match result {
            Ok(r) => {
                let t = d.breaker.record_success();
                drop(d);
                self.publish_transition(t);
                Outcome::Done(Ok(r))
            }
            Err(e) => {
                let delay = self.config.retry_delay(attempt - 1);
                let can_retry = retryable_op
                    && e.code().is_retryable()
                    && !matches!(e, CallError::Timeout(_))
                    && attempt < self.config.retry_max_attempts
                    && Instant::now() + delay < deadline
                    && d.budget.withdraw();
                if can_retry {
                    tracing::debug!(worker = %member.id, error = %e, attempt, "retrying");
                    Outcome::Retry(delay)
                } else {
                    let e = match e {
                        CallError::Timeout(_) => CallError::Timeout(limit),
                        // The worker stopped the request on its own deadline (the protocol's
                        // `cancelled`; the host sent no cancel) just as the host's ran out:
                        // one deadline, so one answer for the caller, whichever side noticed
                        // first.
                        CallError::Remote(body)
                            if body.code == ErrorCode::Cancelled && Instant::now() >= deadline =>
                        {
                            CallError::Timeout(limit)
                        }
                        e => e,
                    };
                    Outcome::Done(Err(PoolError::Call(e)))
                }
            }
        }
    }
}
