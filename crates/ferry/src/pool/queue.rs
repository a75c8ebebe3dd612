//! The bounded priority queue of callers waiting for a worker.
//!
//! It holds callers, not requests: a caller waits here until it is at the head and a
//! worker has room, then does its own I/O. Three levels (high, normal, low), FIFO within
//! a level. Only the head may take a free place, so a newcomer never overtakes a waiter.

use crate::protocol::Priority;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

/// One waiting caller.
#[derive(Default)]
pub(crate) struct Ticket {
    /// A synchronous caller waits here (with the dispatch mutex).
    pub(crate) cv: Condvar,
    /// An async caller's task.
    waker: Mutex<Option<Waker>>,
}

impl Ticket {
    pub(crate) fn set_waker(&self, waker: &Waker) {
        *self.waker.lock() = Some(waker.clone());
    }

    pub(crate) fn wake(&self) {
        self.cv.notify_one();
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

/// The queue.
pub(crate) struct WaitQueue {
    levels: [VecDeque<Arc<Ticket>>; 3],
    capacity: usize,
}

fn level(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl WaitQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        WaitQueue {
            levels: Default::default(),
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }

    /// Adds a caller; `None` when the queue is full.
    pub(crate) fn push(&mut self, priority: Priority) -> Option<Arc<Ticket>> {
        if self.len() >= self.capacity {
            return None;
        }
        let ticket = Arc::new(Ticket::default());
        self.levels[level(priority)].push_back(ticket.clone());
        Some(ticket)
    }

    pub(crate) fn head(&self) -> Option<&Arc<Ticket>> {
        self.levels.iter().find_map(|l| l.front())
    }

    pub(crate) fn is_head(&self, ticket: &Arc<Ticket>) -> bool {
        self.head().is_some_and(|h| Arc::ptr_eq(h, ticket))
    }

    /// Removes a caller (served, timed out, gone); returns whether it was queued.
    pub(crate) fn remove(&mut self, ticket: &Arc<Ticket>) -> bool {
        for l in &mut self.levels {
            if let Some(pos) = l.iter().position(|t| Arc::ptr_eq(t, ticket)) {
                l.remove(pos);
                return true;
            }
        }
        false
    }

    pub(crate) fn wake_head(&self) {
        if let Some(h) = self.head() {
            h.wake();
        }
    }

    /// Wakes every waiter (shutdown, breaker opened: they leave with an error).
    pub(crate) fn wake_all(&self) {
        for t in self.levels.iter().flatten() {
            t.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_highest_priority_then_oldest() {
        let mut q = WaitQueue::new(10);
        let low = q.push(Priority::Low).unwrap();
        let n1 = q.push(Priority::Normal).unwrap();
        let n2 = q.push(Priority::Normal).unwrap();
        let high = q.push(Priority::High).unwrap();
        for expected in [&high, &n1, &n2, &low] {
            assert!(q.is_head(expected));
            assert!(q.remove(expected));
        }
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue_refuses() {
        let mut q = WaitQueue::new(2);
        assert!(q.push(Priority::Low).is_some());
        assert!(q.push(Priority::Low).is_some());
        assert!(q.push(Priority::High).is_none());
    }
}
