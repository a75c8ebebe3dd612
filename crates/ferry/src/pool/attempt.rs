//! The attempt loop of a pool call, written once for the synchronous and the async path.
//!
//! A call takes a place on a worker (waiting in the queue if none is free), sends, waits
//! for the answer, and settles it: done, or retried after a backoff (see `retry.rs`).
//! [`Pool::call_with`](super::Pool::call_with) and
//! [`Pool::call_async`](super::Pool::call_async) both run [`run`]; they differ only in how
//! they wait, which a [`Waiting`] supplies. [`Blocking`] blocks the caller's thread inside
//! each step (so a lone caller does its I/O on its own thread, no hop) and its futures are
//! ready when first polled; [`complete_now`] drives them without an executor.

use super::member::Member;
use super::retry::Outcome;
use super::{Inner, PoolError};
use crate::connection::{CallError, Fill, Incoming, Reservation, Response, ResponseRef};
use crate::protocol::{Envelope, Stamp};
use crate::worker::CallOptions;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How one call path waits: for a place, for the answer, between attempts.
pub(super) trait Waiting {
    /// What a successful exchange gives: the owned answer, or what a visitor made of it.
    type Answer;

    /// A reserved place on a worker, or why there is none before `deadline`.
    fn acquire(
        &mut self,
        inner: &Arc<Inner>,
        request: &Envelope,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Arc<Member>, Reservation), PoolError>>;

    /// Sends `request` on the reserved place and waits for its answer, passing events on.
    fn exchange(
        &mut self,
        reservation: Reservation,
        request: &Envelope,
        fill: Fill<'_>,
        deadline: Instant,
        limit: Duration,
    ) -> impl Future<Output = Result<Self::Answer, CallError>>;

    /// Waits out a retry's backoff.
    fn pause(&mut self, delay: Duration) -> impl Future<Output = ()>;
}

/// The loop both call paths run.
pub(super) async fn run<W: Waiting>(
    inner: &Arc<Inner>,
    request: &Envelope,
    options: &CallOptions,
    waiting: &mut W,
) -> Result<W::Answer, PoolError> {
    let (deadline, limit) = inner.deadline_for(request, options);
    let retryable_op = inner.may_retry(request);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (member, reservation) = waiting.acquire(inner, request, deadline).await?;
        // Sent from a view, so a retry resends the same envelope without a copy.
        let stamp =
            (request.timestamp.is_none() && reservation.sends_timestamps()).then(Stamp::now);
        let fill = inner.fill(stamp.as_ref());
        let result = waiting
            .exchange(reservation, request, fill, deadline, limit)
            .await;
        match inner.after_call(&member, result, retryable_op, attempt, deadline, limit) {
            Outcome::Done(r) => return r,
            Outcome::Retry(delay) => waiting.pause(delay).await,
        }
    }
}

/// Runs a future whose every step is ready when polled ([`Blocking`]'s) to its end.
pub(super) fn complete_now<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => value,
        // Unreachable by construction: `Blocking` never returns a pending future.
        Poll::Pending => unreachable!("a blocking pool call's step was not ready"),
    }
}

/// A place on a worker, waited for on this thread (the synchronous paths).
fn acquire_blocking(
    inner: &Arc<Inner>,
    request: &Envelope,
    deadline: Instant,
) -> std::future::Ready<Result<(Arc<Member>, Reservation), PoolError>> {
    std::future::ready(inner.acquire_sync(request.priority.unwrap_or_default(), deadline))
}

/// A retry's backoff, slept on this thread (the synchronous paths).
fn pause_blocking(delay: Duration) -> std::future::Ready<()> {
    std::thread::sleep(delay);
    std::future::ready(())
}

/// The synchronous path: every step blocks this thread, then is ready.
pub(super) struct Blocking<'a, F> {
    pub attachments: &'a [&'a [u8]],
    pub on_event: F,
}

impl<F: FnMut(&Envelope)> Waiting for Blocking<'_, F> {
    type Answer = Response;

    fn acquire(
        &mut self,
        inner: &Arc<Inner>,
        request: &Envelope,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Arc<Member>, Reservation), PoolError>> {
        acquire_blocking(inner, request, deadline)
    }

    fn exchange(
        &mut self,
        reservation: Reservation,
        request: &Envelope,
        fill: Fill<'_>,
        deadline: Instant,
        _limit: Duration,
    ) -> impl Future<Output = Result<Response, CallError>> {
        let result = reservation
            .send_filled(request, fill, self.attachments, Some(deadline))
            .and_then(|pending| pending.wait(&mut self.on_event));
        std::future::ready(result)
    }

    fn pause(&mut self, delay: Duration) -> impl Future<Output = ()> {
        pause_blocking(delay)
    }
}

/// The synchronous path with the answer seen in place by `visit` (run once, on success).
pub(super) struct BlockingInPlace<'a, F, V> {
    pub attachments: &'a [&'a [u8]],
    pub on_event: F,
    pub visit: Option<V>,
}

impl<F: FnMut(&Envelope), V: FnOnce(ResponseRef<'_>) -> R, R> Waiting
    for BlockingInPlace<'_, F, V>
{
    type Answer = R;

    fn acquire(
        &mut self,
        inner: &Arc<Inner>,
        request: &Envelope,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Arc<Member>, Reservation), PoolError>> {
        acquire_blocking(inner, request, deadline)
    }

    fn exchange(
        &mut self,
        reservation: Reservation,
        request: &Envelope,
        fill: Fill<'_>,
        deadline: Instant,
        _limit: Duration,
    ) -> impl Future<Output = Result<R, CallError>> {
        let result = reservation
            .send_filled(request, fill, self.attachments, Some(deadline))
            .and_then(|pending| {
                // Only a successful answer reaches the visitor, and that ends the call: an
                // attempt after it (none is made) would find it gone.
                let visit = self.visit.take().ok_or_else(|| {
                    CallError::Transport(crate::transport::TransportError::Internal(
                        "a pool call's answer was visited twice".into(),
                    ))
                })?;
                let mut visit = Some(visit);
                let result = pending
                    .wait_in_place(&mut self.on_event, |answer| visit.take().map(|v| v(answer)));
                if let Some(unused) = visit {
                    // Not answered (an error to retry or report): keep it for the next try.
                    self.visit = Some(unused);
                }
                result.and_then(|out| {
                    out.ok_or_else(|| {
                        CallError::Transport(crate::transport::TransportError::Internal(
                            "an answer in place was not seen".into(),
                        ))
                    })
                })
            });
        std::future::ready(result)
    }

    fn pause(&mut self, delay: Duration) -> impl Future<Output = ()> {
        pause_blocking(delay)
    }
}

/// The async path: waits without blocking the executor; the connection's reader thread
/// delivers the answer.
pub(super) struct Awaiting<'a, F> {
    pub attachments: &'a [&'a [u8]],
    pub on_event: F,
    /// The pool's `async_lead`.
    pub lead: Duration,
}

impl<F: FnMut(&Envelope) + Send> Waiting for Awaiting<'_, F> {
    type Answer = Response;

    fn acquire(
        &mut self,
        inner: &Arc<Inner>,
        request: &Envelope,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Arc<Member>, Reservation), PoolError>> {
        inner.acquire_async(request.priority.unwrap_or_default(), deadline)
    }

    async fn exchange(
        &mut self,
        reservation: Reservation,
        request: &Envelope,
        fill: Fill<'_>,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Response, CallError> {
        let mut pending = reservation.send_async_leading(
            request,
            fill,
            self.attachments,
            Some(deadline),
            self.lead,
        )?;
        let on_event = &mut self.on_event;
        let waited = tokio::time::timeout_at(deadline.into(), async {
            loop {
                match pending.next_async().await {
                    Some(Incoming::Event(e)) => on_event(&e),
                    Some(Incoming::Done(r)) => return r,
                    None => {
                        return Err(CallError::WorkerCrashed {
                            status: "answer stream ended".into(),
                        })
                    }
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r,
            Err(_) => {
                pending.cancel();
                Err(CallError::Timeout(limit))
            }
        }
    }

    async fn pause(&mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}
