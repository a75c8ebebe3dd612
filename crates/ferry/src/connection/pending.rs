//! One request in flight: its caller waits for events and the answer (leading the read
//! when the link is free), or polls them from async code; dropping it cancels.

use super::reader::OwnAnswer;
use super::slot::{Incoming, Slot};
use super::{CallError, Connection, Response, ResponseRef};
use crate::protocol::{Envelope, RequestId};
use crate::transport::TransportError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a synchronous wait ended well, as [`Pending::wait_for_answer`] returns it. The
/// owned answer itself is moved into the caller's place, not returned: a result that
/// carried it was a 400-byte value copied at each return, three to five `memcpy`s per call
/// even when the answer was only visited (docs/benchmarks.md, fourteenth round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// The answer, copied out of the link, is in the caller's place.
    Owned,
    /// The answer was seen in place by the caller's visitor.
    Visited,
}

/// One request in flight: wait for its events and its answer.
pub struct Pending {
    pub(super) conn: Arc<Connection>,
    pub(super) id: RequestId,
    /// The number of `id`: the request's key in the pending table.
    pub(super) key: u64,
    pub(super) slot: Arc<Slot>,
    pub(super) deadline: Option<Instant>,
    /// How long the caller gave the request when it was sent (what a timeout reports).
    pub(super) window: Option<Duration>,
    pub(super) finished: bool,
    pub(super) is_async: bool,
    /// Until when an async caller reads the link itself before leaving it to the reader
    /// thread; `None`: it does not (any more), and the reader thread reads for it.
    pub(super) lead_until: Option<Instant>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The request's `message_id`.
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// Waits on this thread for the answer; `on_event` sees each event as it arrives.
    /// Reads the link itself when no one else does (no thread hop).
    pub fn wait(mut self, mut on_event: impl FnMut(&Envelope)) -> Result<Response, CallError> {
        let mut taken = None;
        match (
            self.wait_for_answer(&mut on_event, None, &mut taken)?,
            taken,
        ) {
            (Answered::Owned, Some(response)) => Ok(response),
            _ => Err(CallError::Transport(TransportError::Internal(
                "an answer was visited in place with nobody to visit it".into(),
            ))),
        }
    }

    /// Like [`wait`](Self::wait), but the answer is not copied out: `f` sees it where it
    /// lies and its result is returned. On shm, when this caller reads the answer itself
    /// (a synchronous call with the link to itself), `data` is decoded there and the
    /// attachments are slices of the ring, valid during `f` only: nothing is copied
    /// unless `f` copies it. When another thread read the answer first (the link's reader
    /// thread, a concurrent caller), `f` sees the copy that thread made. Keep `f` short:
    /// the worker cannot reuse the ring space of the answer, and no other answer on this
    /// link is read, while it runs.
    ///
    /// ```
    /// # use ferry::prelude::*;
    /// # use ferry::protocol::Envelope;
    /// # fn demo(worker: &std::sync::Arc<ferry::connection::Connection>) -> Result<(), CallError> {
    /// let request = Envelope::request("", "echo", serde_json::Value::Null);
    /// let pending = worker.start(request, &[b"abc".as_slice()], None)?;
    /// let total: usize = pending.wait_in_place(|_event| {}, |answer| {
    ///     answer.attachments.iter().map(|a| a.len()).sum()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn wait_in_place<R>(
        mut self,
        mut on_event: impl FnMut(&Envelope),
        f: impl FnOnce(ResponseRef<'_>) -> R,
    ) -> Result<R, CallError> {
        let mut f = Some(f);
        let mut out = None;
        let mut taken = None;
        let answer = {
            let mut visit = |answer: ResponseRef<'_>| {
                if let Some(f) = f.take() {
                    out = Some(f(answer));
                }
            };
            self.wait_for_answer(&mut on_event, Some(&mut visit), &mut taken)?
        };
        match (answer, f, out, taken) {
            (Answered::Visited, _, Some(out), _) => Ok(out),
            (Answered::Owned, Some(f), _, Some(response)) => {
                let attachments: Vec<&[u8]> =
                    response.attachments.iter().map(Vec::as_slice).collect();
                Ok(f(ResponseRef {
                    envelope: &response.envelope,
                    data: &response.data,
                    attachments: &attachments,
                    copied: true,
                }))
            }
            _ => Err(CallError::Transport(TransportError::Internal(
                "an answer in place was seen twice or not at all".into(),
            ))),
        }
    }

    /// The loop behind [`wait`](Self::wait) and [`wait_in_place`](Self::wait_in_place).
    /// `taken`: where an owned answer is moved (`Ok(Answered::Owned)` says it is there).
    fn wait_for_answer(
        &mut self,
        on_event: &mut dyn FnMut(&Envelope),
        visit: Option<&mut dyn FnMut(ResponseRef<'_>)>,
        taken: &mut Option<Response>,
    ) -> Result<Answered, CallError> {
        // Whether `visit` saw the answer (then `read_one` returns nothing for it).
        let visited = std::cell::Cell::new(false);
        let seen_it = &visited;
        let mut noting = visit.map(|visit| {
            move |answer: ResponseRef<'_>| {
                let visited = seen_it;
                visited.set(true);
                visit(answer)
            }
        });
        // The nudge count noted after this caller last failed to lead; `None`: none since.
        let mut seen: Option<u64> = None;
        loop {
            // What another thread delivered: one load, no lock, when nothing was (a delivery
            // it misses is seen under the link's lock or the slot's, below).
            if self.slot.has_items() {
                match self.slot.pop() {
                    Some(Incoming::Event(e)) => {
                        on_event(&e);
                        continue;
                    }
                    Some(Incoming::Done(result)) => {
                        self.finished = true;
                        return result.map(|answer| place(taken, answer));
                    }
                    None => {}
                }
            }
            // `Some(outcome)` when this caller led: its answer, or `None` on its deadline.
            let led = {
                let conn = &*self.conn;
                conn.try_lead(Some(self.key)).map(|mut rx| {
                    // Frames for this request come back from `read_one` directly; the slot
                    // holds what other threads delivered (the previous leader, a failure of
                    // the whole link), looked at with one load before each read.
                    let outcome = loop {
                        if self.slot.has_items() {
                            if let Some(item) = self.slot.pop() {
                                match item {
                                    Incoming::Event(e) => on_event(&e),
                                    Incoming::Done(result) => {
                                        break Some(result.map(|answer| place(taken, answer)))
                                    }
                                }
                                continue;
                            }
                        }
                        // The caller's own answer is visited, or moved into `taken`.
                        let answer = match noting.as_mut() {
                            Some(v) => OwnAnswer::Visit(v),
                            None => OwnAnswer::Take(taken),
                        };
                        match conn.read_one(&mut rx, self.deadline, Some(&self.slot), answer) {
                            Ok(Some(Incoming::Event(e))) => on_event(&e),
                            Ok(Some(Incoming::Done(result))) => {
                                break Some(result.map(|answer| place(taken, answer)))
                            }
                            Ok(None) if visited.get() => break Some(Ok(Answered::Visited)),
                            Ok(None) => {
                                if taken.is_some() {
                                    break Some(Ok(Answered::Owned));
                                }
                            }
                            // Every pending slot, ours included, now holds its failure.
                            Err(TransportError::Timeout) => break None,
                            Err(_) => {}
                        }
                    };
                    // Lets go of the link and steps down (also when `on_event` or the
                    // visitor panics, as the guard is dropped while unwinding).
                    drop(rx);
                    outcome
                })
            };
            match led {
                Some(Some(result)) => {
                    self.finished = true;
                    return result;
                }
                Some(None) => return Err(self.time_out()),
                // Another thread reads. First note the nudge count (looking at the slot under
                // its lock), then try to lead once more: a leader that stepped down before the
                // count was noted has let go of the link, and one that steps down after it
                // moves the count past it.
                None => match seen.take() {
                    None => match self.slot.pop_or_nudges() {
                        Ok(Incoming::Event(e)) => on_event(&e),
                        Ok(Incoming::Done(result)) => {
                            self.finished = true;
                            return result.map(|answer| place(taken, answer));
                        }
                        Err(count) => seen = Some(count),
                    },
                    Some(count) => {
                        if !self.slot.wait(count, self.deadline) {
                            return Err(self.time_out());
                        }
                    }
                },
            }
        }
    }

    /// The next event or the answer, for async callers (use a connection's
    /// [`start_async`](Connection::start_async)). Returns `None` after the answer.
    ///
    /// A request a pool sent from async code is first read for on the polling thread, for
    /// at most the pool's [`async_lead`](crate::pool::PoolConfig::async_lead) after it was
    /// sent; only then is the connection's reader thread woken to read on its behalf.
    pub fn next_async(&mut self) -> impl Future<Output = Option<Incoming>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.finished {
                return std::task::Poll::Ready(None);
            }
            if let Some(item) = self.lead_briefly() {
                if matches!(item, Incoming::Done(_)) {
                    self.finish_async();
                }
                return std::task::Poll::Ready(Some(item));
            }
            match self.slot.poll_pop(cx.waker()) {
                Some(item) => {
                    if matches!(item, Incoming::Done(_)) {
                        self.finish_async();
                    }
                    std::task::Poll::Ready(Some(item))
                }
                None => std::task::Poll::Pending,
            }
        })
    }

    /// Reads the link on this thread until an item for this request arrives or the lead
    /// window ends; `None` once the window is over (or another thread reads), after which
    /// the reader thread reads for this request.
    fn lead_briefly(&mut self) -> Option<Incoming> {
        let until = self.lead_until?;
        let until = self.deadline.map_or(until, |d| d.min(until));
        let (conn, slot) = (&self.conn, &self.slot);
        // `Some(outcome)` when this caller led: an item for it, or `None` at the window's end.
        // Leading ends with the closure: the link is let go of and the caller steps down
        // (the reader thread is woken only if it reads for someone: not for this request).
        let led = conn.try_lead(Some(self.key)).map(|mut rx| loop {
            if slot.has_items() {
                if let Some(item) = slot.pop() {
                    break Some(item);
                }
            }
            match conn.read_one(&mut rx, Some(until), Some(slot), OwnAnswer::Return) {
                Ok(Some(item)) => break Some(item),
                Ok(None) => {}
                Err(TransportError::Timeout) => break None,
                // Every pending slot, ours included, now holds its failure.
                Err(_) => {}
            }
        });
        let outcome = led.flatten();
        if outcome.is_none() {
            // The window is over, or another thread reads: from now on the reader thread
            // reads for this request (started and woken here).
            self.lead_until = None;
            if let Err(e) = self.conn.register_async(self.key) {
                return Some(Incoming::Done(Err(e)));
            }
        }
        outcome
    }

    /// The answer if it has arrived, without blocking and without reading the link (use
    /// with [`Connection::start_async`], whose reader thread reads). Events are dropped.
    pub fn poll_done(&mut self) -> Option<Result<Response, CallError>> {
        while let Some(item) = self.slot.pop() {
            if let Incoming::Done(result) = item {
                self.finish_async();
                return Some(result);
            }
        }
        None
    }

    /// Stops waiting: sends a `cancel` and abandons the slot (the worker's late answer is
    /// discarded when it comes).
    pub fn cancel(mut self) {
        self.abandon();
    }

    fn finish_async(&mut self) {
        self.finished = true;
        if self.is_async {
            self.is_async = false;
            self.conn.async_done(self.key);
        }
    }

    fn abandon(&mut self) {
        if !self.finished {
            self.finished = true;
            self.slot.abandon();
            self.conn.send_cancel(self.id.as_str());
        }
        if self.is_async {
            self.is_async = false;
            // The reader thread reads on until the worker has answered the cancel: with
            // no caller left to read, the answer would wait on the link, and the request
            // keep its place on the worker, until some later call read it.
            self.conn.async_abandoned(self.key);
        }
    }

    fn time_out(&mut self) -> CallError {
        // The window the caller gave, not what is left of it (which is zero by now).
        let limit = self.window.unwrap_or_default();
        self.abandon();
        CallError::Timeout(limit)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Moves `answer` into the caller's place.
fn place(taken: &mut Option<Response>, answer: Response) -> Answered {
    *taken = Some(answer);
    Answered::Owned
}
