//! One request's mailbox: where its events and its terminal answer are delivered.

use super::coalesce::Coalescing;
use super::{CallError, Response};
use crate::protocol::{Envelope, EVENT_PROGRESS};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;
use std::time::Instant;

/// What arrives for a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A non-terminal event (progress, ...).
    Event(Envelope),
    /// The terminal answer: exactly one per request.
    Done(Result<Response, CallError>),
}

#[derive(Default)]
struct Inner {
    /// Events not yet taken: bounded, progress coalesced when the reader falls behind
    /// (a worker flooding events, or a caller that stops reading them).
    queue: Coalescing<Incoming>,
    /// The terminal answer, once delivered: taken after every event before it. Kept out of
    /// `queue` so that a call with no events never allocates one. Inline, not boxed: a
    /// boxed one made the slot smaller (120 bytes instead of 520) but cost the answers that
    /// another thread delivers (the reader thread's, for async calls) an allocation each,
    /// and measured no gain for the lone synchronous caller, which takes its own answer
    /// from the link (docs/benchmarks.md, tenth round).
    done: Option<Incoming>,
    /// Bumped when the reading leader steps down, so a waiting follower tries to lead.
    nudges: u64,
    /// The async task waiting on this slot, if any.
    waker: Option<Waker>,
    /// Since when nobody waits any more (timed out, cancelled, dropped); deliveries are
    /// discarded.
    abandoned: Option<Instant>,
}

impl Inner {
    fn pop(&mut self) -> Option<Incoming> {
        self.queue.pop().or_else(|| self.done.take())
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.done.is_none()
    }
}

/// Whether `item` is a progress event (which a newer one supersedes).
fn is_progress(item: &Incoming) -> bool {
    matches!(item, Incoming::Event(e) if e.event_name.as_deref() == Some(EVENT_PROGRESS))
}

/// The mailbox of one in-flight request.
#[derive(Default)]
pub(crate) struct Slot {
    inner: Mutex<Inner>,
    cv: Condvar,
    /// Whether `inner` holds an item; written only under the `inner` lock, read without
    /// it by a synchronous caller before it tries to lead and by the leader between reads
    /// ([`Slot::has_items`]).
    filled: AtomicBool,
}

impl Slot {
    pub(crate) fn deliver(&self, item: Incoming) {
        let mut inner = self.inner.lock();
        if inner.abandoned.is_some() {
            return;
        }
        match item {
            // Exactly one terminal answer: a second (which the pending table prevents)
            // would never be read anyway.
            Incoming::Done(_) => {
                inner.done.get_or_insert(item);
            }
            Incoming::Event(_) => inner.queue.push(item, is_progress),
        }
        // SYNC POINT: Release pairs with the Acquire load in `has_items`; a leader that
        // takes the link after the one that delivered this (through the link's mutex)
        // sees `true`.
        self.filled.store(true, Ordering::Release);
        let waker = inner.waker.take();
        drop(inner);
        self.cv.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn nudge(&self) {
        let mut inner = self.inner.lock();
        inner.nudges += 1;
        let waker = inner.waker.take();
        drop(inner);
        self.cv.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn pop(&self) -> Option<Incoming> {
        let mut inner = self.inner.lock();
        let item = inner.pop();
        self.refresh(&inner);
        item
    }

    /// Whether something may be waiting: `false` means [`pop`](Self::pop) would find
    /// nothing delivered before the caller's last acquire (a lock taken since). One load,
    /// no lock.
    pub(crate) fn has_items(&self) -> bool {
        // SYNC POINT: Acquire pairs with the Release store in `deliver`.
        self.filled.load(Ordering::Acquire)
    }

    /// Keeps `filled` in step with `inner` (whose lock the caller holds).
    fn refresh(&self, inner: &Inner) {
        if inner.is_empty() {
            // Under the lock, as every store to it; only a reader that then locks relies
            // on what it saw being `false`.
            self.filled.store(false, Ordering::Relaxed);
        }
    }

    /// The next item, or else the nudge count (one look under the lock).
    pub(crate) fn pop_or_nudges(&self) -> Result<Incoming, u64> {
        let mut inner = self.inner.lock();
        let item = inner.pop();
        self.refresh(&inner);
        item.ok_or(inner.nudges)
    }

    /// Waits until something is delivered, a nudge newer than `seen` arrives, or
    /// `deadline` passes. Returns `false` on the deadline.
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut inner = self.inner.lock();
        while inner.is_empty() && inner.nudges == seen {
            match deadline {
                None => self.cv.wait(&mut inner),
                Some(d) => {
                    if self.cv.wait_until(&mut inner, d).timed_out() {
                        return !inner.is_empty() || inner.nudges != seen;
                    }
                }
            }
        }
        true
    }

    /// Pops an item or registers `waker` to be woken at the next delivery or nudge.
    pub(crate) fn poll_pop(&self, waker: &Waker) -> Option<Incoming> {
        let mut inner = self.inner.lock();
        let item = inner.pop();
        self.refresh(&inner);
        match item {
            Some(item) => Some(item),
            None => {
                inner.waker = Some(waker.clone());
                None
            }
        }
    }

    pub(crate) fn abandoned_since(&self) -> Option<Instant> {
        self.inner.lock().abandoned
    }

    pub(crate) fn abandon(&self) {
        let mut inner = self.inner.lock();
        inner.abandoned.get_or_insert_with(Instant::now);
        inner.queue.clear();
        inner.done = None;
        inner.waker = None;
        self.refresh(&inner);
    }
}
