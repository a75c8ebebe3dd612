//! Dispatch: a call takes the least-loaded ready worker with room, or waits in the bounded
//! priority queue until it heads the queue and a worker has room (or its deadline passes).
//! Everything here runs under the dispatch lock, except the waiting itself.

use super::breaker::Breaker;
use super::budget::RetryBudget;
use super::member::Member;
use super::queue::{Ticket, WaitQueue};
use super::{Inner, PoolError, WorkerState};
use crate::connection::Reservation;
use crate::protocol::Priority;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// State guarded by the dispatch lock.
pub(super) struct Dispatch {
    pub(super) queue: WaitQueue,
    pub(super) breaker: Breaker,
    pub(super) budget: RetryBudget,
}

impl Inner {
    /// The least-loaded ready worker with room, with a place reserved on it.
    fn try_reserve(&self) -> Option<(Arc<Member>, Reservation)> {
        let members = self.members.lock();
        let mut best: Option<(usize, &Arc<Member>, Arc<crate::connection::Connection>)> = None;
        // Only spreading matters here; no other memory is published through this counter.
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let n = members.len().max(1);
        for m in members.iter().cycle().skip(start % n).take(members.len()) {
            let st = m.state.lock();
            if st.state != WorkerState::Ready {
                continue;
            }
            let Some(conn) = &st.conn else { continue };
            if conn.broken().is_some() {
                continue;
            }
            let load = conn.in_flight();
            if load < self.config.max_in_flight && best.as_ref().is_none_or(|(l, _, _)| load < *l) {
                best = Some((load, m, conn.clone()));
            }
        }
        let (_, member, conn) = best?;
        let reservation = conn.reserve().ok()?;
        Some((member.clone(), reservation))
    }

    fn refusal(&self, d: &Dispatch) -> Option<PoolError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Some(PoolError::ShuttingDown(self.spec.worker_type.clone()));
        }
        if !d.breaker.allows_calls(Instant::now()) {
            return Some(PoolError::CircuitOpen(self.spec.worker_type.clone()));
        }
        None
    }

    /// Under the dispatch lock: a free worker for a newcomer when nobody queues, else a
    /// place in the queue.
    fn admit(&self, d: &mut Dispatch, priority: Priority) -> Result<Admission, PoolError> {
        if let Some(e) = self.refusal(d) {
            return Err(e);
        }
        if d.queue.is_empty() {
            if let Some(found) = self.try_reserve() {
                return Ok(Admission::Served(found));
            }
        }
        d.queue
            .push(priority)
            .map(Admission::Queued)
            .ok_or_else(|| self.overloaded())
    }

    /// Under the dispatch lock: a free worker for `ticket` if it heads the queue; it then
    /// leaves the queue and the next head is woken (there may be room for it too).
    fn take_as_head(
        &self,
        d: &mut Dispatch,
        ticket: &Arc<Ticket>,
    ) -> Option<(Arc<Member>, Reservation)> {
        if !d.queue.is_head(ticket) {
            return None;
        }
        let found = self.try_reserve()?;
        d.queue.remove(ticket);
        d.queue.wake_head();
        Some(found)
    }

    /// Under the dispatch lock: `ticket` gives up its place.
    fn leave(d: &mut Dispatch, ticket: &Arc<Ticket>) {
        if d.queue.remove(ticket) {
            d.queue.wake_head();
        }
    }

    fn queue_timeout(&self, started: Instant) -> PoolError {
        PoolError::QueueTimeout {
            worker_type: self.spec.worker_type.clone(),
            waited: started.elapsed(),
        }
    }

    pub(super) fn acquire_sync(
        &self,
        priority: Priority,
        deadline: Instant,
    ) -> Result<(Arc<Member>, Reservation), PoolError> {
        let started = Instant::now();
        let mut d = self.dispatch.lock();
        let ticket = match self.admit(&mut d, priority)? {
            Admission::Served(found) => return Ok(found),
            Admission::Queued(ticket) => ticket,
        };
        self.nudge_supervisor();
        loop {
            if let Some(e) = self.refusal(&d) {
                Self::leave(&mut d, &ticket);
                return Err(e);
            }
            if let Some(found) = self.take_as_head(&mut d, &ticket) {
                return Ok(found);
            }
            if ticket.cv.wait_until(&mut d, deadline).timed_out() {
                if let Some(found) = self.take_as_head(&mut d, &ticket) {
                    return Ok(found);
                }
                Self::leave(&mut d, &ticket);
                return Err(self.queue_timeout(started));
            }
        }
    }

    pub(super) async fn acquire_async(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Instant,
    ) -> Result<(Arc<Member>, Reservation), PoolError> {
        let started = Instant::now();
        let ticket = match self.admit(&mut self.dispatch.lock(), priority)? {
            Admission::Served(found) => return Ok(found),
            Admission::Queued(ticket) => ticket,
        };
        self.nudge_supervisor();
        let guard = TicketGuard {
            inner: self.clone(),
            ticket,
        };
        let wait = std::future::poll_fn(|cx| {
            let mut d = self.dispatch.lock();
            if let Some(e) = self.refusal(&d) {
                return std::task::Poll::Ready(Err(e));
            }
            if let Some(found) = self.take_as_head(&mut d, &guard.ticket) {
                return std::task::Poll::Ready(Ok(found));
            }
            guard.ticket.set_waker(cx.waker());
            std::task::Poll::Pending
        });
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(result) => result,
            Err(_) => Err(self.queue_timeout(started)),
        }
    }

    fn overloaded(&self) -> PoolError {
        PoolError::Overloaded {
            worker_type: self.spec.worker_type.clone(),
            capacity: self.config.queue_capacity,
        }
    }
}

/// What a caller gets on arrival.
enum Admission {
    /// A worker with a reserved place.
    Served((Arc<Member>, Reservation)),
    /// A place in the wait queue.
    Queued(Arc<Ticket>),
}

/// Removes an async caller's ticket when its future ends or is dropped.
struct TicketGuard {
    inner: Arc<Inner>,
    ticket: Arc<Ticket>,
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        Inner::leave(&mut self.inner.dispatch.lock(), &self.ticket);
    }
}
