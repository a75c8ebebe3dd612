//! The one registry type behind sessions and batches: entries by id, capped while open,
//! pruned once finished.
//!
//! Clients create sessions and batches at will, so what they may make the server hold is
//! bounded twice: open (unfinished) entries by count and by bytes of their input, and
//! finished ones by count (`server.keep_finished`, oldest dropped first).

use super::OrchestratorError;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the registry needs to know of an entry.
pub(crate) trait Entry {
    /// Whether it has ended (it then no longer counts against the open caps).
    fn is_finished(&self) -> bool;
}

struct Held<T> {
    item: Arc<T>,
    /// Order of registration: finished entries are pruned oldest first.
    seq: u64,
    /// The size of its input, as JSON: what it holds in memory beyond its bookkeeping.
    bytes: usize,
}

/// Entries by id.
pub(crate) struct Registry<T> {
    /// What the entries are, for messages (`session`, `batch`).
    what: &'static str,
    /// Its plural, as in the `[limits]` keys (`sessions`, `batches`).
    plural: &'static str,
    entries: Mutex<BTreeMap<String, Held<T>>>,
    next_seq: std::sync::atomic::AtomicU64,
    keep_finished: usize,
    max_open: usize,
    max_open_bytes: usize,
}

impl<T: Entry> Registry<T> {
    pub(crate) fn new(
        (what, plural): (&'static str, &'static str),
        keep_finished: usize,
        max_open: usize,
        max_open_bytes: usize,
    ) -> Self {
        Registry {
            what,
            plural,
            entries: Mutex::new(BTreeMap::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            keep_finished,
            max_open,
            max_open_bytes,
        }
    }

    /// Makes an entry with `make` and registers it under `id`, unless that would go past
    /// the caps. `make` runs under the registry's lock (so two callers cannot both take
    /// the last place) and must not use this registry.
    pub(crate) fn insert_with(
        &self,
        id: String,
        bytes: usize,
        make: impl FnOnce() -> Arc<T>,
    ) -> Result<Arc<T>, OrchestratorError> {
        let mut entries = self.entries.lock();
        self.prune(&mut entries);
        let (open, open_bytes) = entries
            .values()
            .filter(|h| !h.item.is_finished())
            .fold((0usize, 0usize), |(n, b), h| {
                (n + 1, b.saturating_add(h.bytes))
            });
        if open >= self.max_open {
            return Err(OrchestratorError::LimitReached(format!(
                "{open} unfinished {} already (limits.open_{}); wait for one to finish or delete one",
                self.plural, self.plural
            )));
        }
        if open_bytes.saturating_add(bytes) > self.max_open_bytes {
            return Err(OrchestratorError::LimitReached(format!(
                "this {} ({bytes} bytes) would take unfinished {} past {} bytes (limits.open_{}_bytes)",
                self.what, self.plural, self.max_open_bytes, self.what
            )));
        }
        let item = make();
        entries.insert(
            id,
            Held {
                item: item.clone(),
                // Under the entries lock; the counter only orders entries.
                seq: self
                    .next_seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                bytes,
            },
        );
        Ok(item)
    }

    /// Drops the oldest finished entries beyond `keep_finished`.
    fn prune(&self, entries: &mut BTreeMap<String, Held<T>>) {
        let mut done: Vec<(u64, String)> = entries
            .iter()
            .filter(|(_, h)| h.item.is_finished())
            .map(|(k, h)| (h.seq, k.clone()))
            .collect();
        if done.len() > self.keep_finished {
            done.sort_unstable();
            for (_, k) in done.iter().take(done.len() - self.keep_finished) {
                entries.remove(k);
            }
        }
    }

    /// Every entry.
    pub(crate) fn all(&self) -> Vec<Arc<T>> {
        self.entries
            .lock()
            .values()
            .map(|h| h.item.clone())
            .collect()
    }

    /// Entry `id`.
    pub(crate) fn get(&self, id: &str) -> Result<Arc<T>, OrchestratorError> {
        self.entries
            .lock()
            .get(id)
            .map(|h| h.item.clone())
            .ok_or_else(|| OrchestratorError::NotFound(format!("{} `{id}`", self.what)))
    }

    /// Takes entry `id` out.
    pub(crate) fn remove(&self, id: &str) -> Result<Arc<T>, OrchestratorError> {
        self.entries
            .lock()
            .remove(id)
            .map(|h| h.item)
            .ok_or_else(|| OrchestratorError::NotFound(format!("{} `{id}`", self.what)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Job(AtomicBool);
    impl Entry for Job {
        fn is_finished(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
    fn job() -> Arc<Job> {
        Arc::new(Job(AtomicBool::new(false)))
    }

    #[test]
    fn open_entries_are_capped_by_count_and_bytes_and_finished_ones_free_their_place() {
        let r = Registry::new(("batch", "batches"), 1, 2, 100);
        let a = r.insert_with("a".into(), 10, job).unwrap();
        r.insert_with("b".into(), 10, job).unwrap();
        let err = r.insert_with("c".into(), 10, job).unwrap_err();
        assert!(matches!(err, OrchestratorError::LimitReached(_)), "{err}");
        assert!(err.to_string().contains("limits.open_batches"), "{err}");
        a.0.store(true, Ordering::Relaxed);
        let c = r.insert_with("c".into(), 10, job).unwrap();
        c.0.store(true, Ordering::Relaxed);
        let err = r.insert_with("d".into(), 95, job).unwrap_err();
        assert!(err.to_string().contains("open_batch_bytes"), "{err}");
    }

    #[test]
    fn finished_entries_beyond_keep_are_pruned_oldest_first() {
        let r = Registry::new(("session", "sessions"), 1, 10, 1000);
        for id in ["c", "b", "a"] {
            let j = r.insert_with(id.into(), 1, job).unwrap();
            j.0.store(true, Ordering::Relaxed);
        }
        r.insert_with("d".into(), 1, job).unwrap();
        let ids: Vec<bool> = ["c", "b", "a", "d"]
            .iter()
            .map(|i| r.get(i).is_ok())
            .collect();
        assert_eq!(ids, vec![false, false, true, true]);
    }
}
