//! A bounded event queue that coalesces progress under backpressure.
//!
//! A worker may send events faster than their reader takes them (a flood of progress, or
//! an HTTP client that stops reading its stream). Queuing every one would let a worker or
//! a slow client grow the host without bound, and dropping arbitrary ones would lose
//! events that matter. Progress is different from other events: only the newest one
//! means anything, so under pressure the newest progress *replaces* older progress.
//!
//! The rules, when the queue already holds `capacity` items:
//! - a new progress item replaces the newest queued progress item (if none is queued,
//!   the oldest queued item that is not progress cannot be displaced, so the new progress
//!   is dropped: a newer one will follow, or the final answer);
//! - a new item that is not progress displaces the oldest queued progress item; with no
//!   progress queued it is dropped and counted in [`Coalescing::dropped`].
//!
//! The terminal answer of a request never goes through this queue, so it is never
//! dropped.
//!
//! ```
//! use ferry::connection::Coalescing;
//! let mut q = Coalescing::new(2);
//! let progress = |s: &&str| s.starts_with('p');
//! q.push("p1", progress);
//! q.push("e1", progress);
//! q.push("p2", progress); // full: p2 takes the place of p1, the newest progress
//! assert_eq!(q.pop(), Some("p2"));
//! assert_eq!(q.pop(), Some("e1"));
//! assert_eq!(q.pop(), None);
//! ```

use std::collections::VecDeque;

/// The default bound on events queued for one request.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// A FIFO of at most `capacity` items that coalesces progress when full (see the module
/// documentation for the rules).
#[derive(Debug)]
pub struct Coalescing<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Default for Coalescing<T> {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

impl<T> Coalescing<T> {
    /// An empty queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Coalescing {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Queues `item`; `is_progress` tells which items may be coalesced.
    pub fn push(&mut self, item: T, is_progress: impl Fn(&T) -> bool) {
        if self.items.len() < self.capacity {
            self.items.push_back(item);
            return;
        }
        if is_progress(&item) {
            match self.items.iter().rposition(&is_progress) {
                Some(newest) => self.items[newest] = item,
                None => self.dropped += 1,
            }
            return;
        }
        match self.items.iter().position(&is_progress) {
            Some(oldest) => {
                self.items.remove(oldest);
                self.items.push_back(item);
            }
            None => self.dropped += 1,
        }
        // Either way one item did not survive as its own entry.
    }

    /// The oldest queued item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets every queued item.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Items that were not progress and found the queue full of other such items.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(x: &(bool, u32)) -> bool {
        x.0
    }

    #[test]
    fn a_flood_of_progress_keeps_the_newest_within_the_bound() {
        let mut q = Coalescing::new(4);
        for i in 0..1_000_000 {
            q.push((true, i), progress);
        }
        assert_eq!(q.len(), 4);
        let kept: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|x| x.1).collect();
        assert_eq!(kept, vec![0, 1, 2, 999_999]);
    }

    #[test]
    fn other_events_displace_progress_and_keep_their_order() {
        let mut q = Coalescing::new(3);
        q.push((true, 1), progress);
        q.push((false, 2), progress);
        q.push((true, 3), progress);
        q.push((false, 4), progress); // displaces progress 1
        q.push((false, 5), progress); // displaces progress 3
        q.push((false, 6), progress); // nothing to displace: dropped
        assert_eq!(q.dropped(), 1);
        let kept: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|x| x.1).collect();
        assert_eq!(kept, vec![2, 4, 5]);
    }
}
