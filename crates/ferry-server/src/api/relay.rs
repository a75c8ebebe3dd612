//! The bounded hand-off between a worker call and its server-sent-events stream.
//!
//! The call runs in its own task and pushes events as the worker sends them; the client
//! reads the stream at its own pace. A client that stops reading must not grow the
//! server: events go through a [`Coalescing`] queue (progress coalesced, a bounded
//! number kept), and the final answer is kept aside, so it is never dropped. When the
//! stream is dropped (the client went away), the call's task is aborted, which drops the
//! pool call and so cancels the request at the worker.

use axum::response::sse::Event;
use ferry::connection::{Coalescing, DEFAULT_EVENT_CAPACITY};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One event of the stream, with whether a newer progress event supersedes it.
struct Item {
    event: Event,
    progress: bool,
}

#[derive(Default)]
struct Queue {
    events: Coalescing<Item>,
    last: Option<Event>,
}

/// The producer's side: the call's task pushes into it.
#[derive(Clone)]
pub(crate) struct RelaySender {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl RelaySender {
    /// Queues an event; `progress` events may be coalesced under backpressure.
    pub(crate) fn event(&self, event: Event, progress: bool) {
        self.shared
            .queue
            .lock()
            .events
            .push(Item { event, progress }, |i| i.progress);
        self.shared.ready.notify_one();
    }

    /// Sets the final event (sent after every queued one, then the stream ends).
    pub(crate) fn finish(&self, event: Event) {
        self.shared.queue.lock().last = Some(event);
        self.shared.ready.notify_one();
    }
}

/// The stream's side; aborts the producing task when dropped.
pub(crate) struct RelayReceiver {
    shared: Arc<Shared>,
    task: Option<AbortHandle>,
    done: bool,
}

impl Drop for RelayReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A connected pair.
pub(crate) fn relay() -> (RelaySender, RelayReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            events: Coalescing::new(DEFAULT_EVENT_CAPACITY),
            last: None,
        }),
        ready: Notify::new(),
    });
    (
        RelaySender {
            shared: shared.clone(),
        },
        RelayReceiver {
            shared,
            task: None,
            done: false,
        },
    )
}

impl RelayReceiver {
    /// The task to abort when the stream is dropped.
    pub(crate) fn abort_on_drop(&mut self, task: AbortHandle) {
        self.task = Some(task);
    }

    /// The next event, or `None` after the final one.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            // `Notify` keeps one permit, so a push between this check and the wait is
            // not missed.
            {
                let mut q = self.shared.queue.lock();
                if let Some(item) = q.events.pop() {
                    return Some(item.event);
                }
                if let Some(last) = q.last.take() {
                    self.done = true;
                    // The answer is out: nothing to cancel any more.
                    self.task = None;
                    return Some(last);
                }
            }
            self.shared.ready.notified().await;
        }
    }
}
