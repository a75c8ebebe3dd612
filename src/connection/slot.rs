//! One request's mailbox: where its events and its terminal answer are delivered.

use crate::protocol::Envelope;
use crate::worker::{CallError, Response};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::task::Waker;
use std::time::Instant;

/// What arrives for a request.
#[derive(Debug)]
pub enum Incoming {
    /// A non-terminal event (progress, ...).
    Event(Envelope),
    /// The terminal answer: exactly one per request.
    Done(Result<Response, CallError>),
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Incoming>,
    /// Bumped when the reading leader steps down, so a waiting follower tries to lead.
    nudges: u64,
    /// The async task waiting on this slot, if any.
    waker: Option<Waker>,
    /// Since when nobody waits any more (timed out, cancelled, dropped); deliveries are
    /// discarded.
    abandoned: Option<Instant>,
}

/// The mailbox of one in-flight request.
#[derive(Default)]
pub(crate) struct Slot {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Slot {
    pub(crate) fn deliver(&self, item: Incoming) {
        let mut inner = self.inner.lock();
        if inner.abandoned.is_some() {
            return;
        }
        inner.queue.push_back(item);
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
        self.inner.lock().queue.pop_front()
    }

    pub(crate) fn nudges(&self) -> u64 {
        self.inner.lock().nudges
    }

    /// Waits until something is delivered, a nudge newer than `seen` arrives, or
    /// `deadline` passes. Returns `false` on the deadline.
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut inner = self.inner.lock();
        while inner.queue.is_empty() && inner.nudges == seen {
            match deadline {
                None => self.cv.wait(&mut inner),
                Some(d) => {
                    if self.cv.wait_until(&mut inner, d).timed_out() {
                        return !inner.queue.is_empty() || inner.nudges != seen;
                    }
                }
            }
        }
        true
    }

    /// Pops an item or registers `waker` to be woken at the next delivery or nudge.
    pub(crate) fn poll_pop(&self, waker: &Waker) -> Option<Incoming> {
        let mut inner = self.inner.lock();
        match inner.queue.pop_front() {
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
        inner.waker = None;
    }
}
