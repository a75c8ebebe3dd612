//! Inference requests in progress by their `request_id`, so that a client can cancel one
//! with `DELETE /api/inference/{request_id}`.
//!
//! A request of `/api/inference/{generate,stream}` registers under the `request_id` its
//! body names (or one the server makes, `req-N`) for as long as its call runs; a second
//! live request with the same id is refused (`409 conflict`). Cancelling signals the
//! handler, which drops the pool call: the engine then sends the worker a protocol
//! `cancel` for it (as when the client goes away). The worker's place is free once the
//! worker has answered the cancel.

use super::error::ApiError;
use axum::http::StatusCode;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The longest `request_id` a client may give.
pub(crate) const MAX_ID_LEN: usize = 128;

/// The requests in progress.
#[derive(Debug, Default)]
pub(crate) struct LiveRequests {
    live: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    /// Tells the registration apart from a later one under the same id.
    serial: u64,
    cancel: oneshot::Sender<()>,
}

/// One registered request: the signal to wait on, and its removal on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    live: Arc<LiveRequests>,
    id: String,
    serial: u64,
    /// Resolves when the request is cancelled.
    pub cancelled: oneshot::Receiver<()>,
}

impl Registration {
    /// The request's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.live.live.lock();
        if live.get(&self.id).is_some_and(|e| e.serial == self.serial) {
            live.remove(&self.id);
        }
    }
}

/// Checks a client's `request_id`: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "request_id: expected 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.', ':', not {:?}",
            id.chars().take(MAX_ID_LEN + 1).collect::<String>()
        )))
    }
}

impl LiveRequests {
    /// Registers a request under `id` (checked), or under a fresh server-made id.
    pub(crate) fn register(self: &Arc<Self>, id: Option<String>) -> Result<Registration, ApiError> {
        if let Some(id) = &id {
            check_id(id)?;
        }
        let mut live = self.live.lock();
        let id = match id {
            Some(id) => {
                if live.contains_key(&id) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!("request_id `{id}` names a request still in progress"),
                    ));
                }
                id
            }
            None => loop {
                // Uniqueness only; a client's own id of the same shape is skipped over.
                let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                let id = format!("req-{n}");
                if !live.contains_key(&id) {
                    break id;
                }
            },
        };
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = oneshot::channel();
        live.insert(id.clone(), Entry { serial, cancel });
        Ok(Registration {
            live: self.clone(),
            id,
            serial,
            cancelled,
        })
    }

    /// Cancels the request in progress under `id`; `404 not_found` when there is none.
    pub(crate) fn cancel(&self, id: &str) -> Result<(), ApiError> {
        let entry = self.live.lock().remove(id);
        match entry {
            Some(e) => {
                // The handler may have just finished: then there is nothing to stop.
                let _ = e.cancel.send(());
                Ok(())
            }
            None => Err(ApiError::not_found(format!(
                "no inference request `{}` is in progress",
                id.escape_debug()
            ))),
        }
    }

    /// How many requests are registered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_while_live_and_free_once_done_or_cancelled() {
        let live = Arc::new(LiveRequests::default());
        let a = live.register(Some("mine".into())).unwrap();
        let dup = live.register(Some("mine".into())).unwrap_err();
        assert_eq!(dup.status(), StatusCode::CONFLICT);
        let made = live.register(None).unwrap();
        assert!(made.id().starts_with("req-"));
        assert_eq!(live.len(), 2);
        drop(a);
        let mut again = live.register(Some("mine".into())).unwrap();
        live.cancel("mine").unwrap();
        assert!(again.cancelled.try_recv().is_ok());
        // Free at once: a new request may take the id while the old one winds down, and
        // the old one's end does not unregister the new one.
        let newer = live.register(Some("mine".into())).unwrap();
        drop(again);
        assert_eq!(
            live.cancel("nope").unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(live.len(), 2);
        drop((newer, made));
        assert_eq!(live.len(), 0);
    }

    #[test]
    fn client_ids_are_checked() {
        let live = Arc::new(LiveRequests::default());
        for bad in ["", "a/b", "a b", &"x".repeat(MAX_ID_LEN + 1), "é"] {
            let e = live.register(Some(bad.to_owned())).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        live.register(Some("A-z_0.9:x".into())).unwrap();
    }
}
