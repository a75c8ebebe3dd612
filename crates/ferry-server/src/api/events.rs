//! `GET /api/events`: the pools' lifecycle events as server-sent events (the console's live
//! worker table reads them).
//!
//! Events, each `data` a JSON object:
//! - `open` `{"worker_types": [...]}`: first, once every pool is subscribed (what happens from
//!   then on is sent).
//! - `lifecycle` `{"worker_type", "worker_id", "kind", "pid", "detail", "device", "at_ms"}`,
//!   plus `data` for a `status_change` (the worker's own report: status, device, memory,
//!   GPU utilization): a [`LifecycleEvent`], `at_ms` the time it was read here (Unix
//!   milliseconds).
//! - `resync` `{"worker_type", "skipped"}`: this client fell behind and `skipped` events of that
//!   worker type were dropped; refetch `/api/workers/status`.
//!
//! Bounded: the stream holds one broadcast receiver per pool and nothing else. It is polled
//! only as fast as the client reads the response, so a client that stops reading makes its
//! receivers lag (the pool's channel keeps a fixed number of events and drops the oldest for
//! laggards) and grows nothing here; when it reads again it gets a `resync` and goes on.
//! The stream ends when every pool stops or when [`ConsoleOptions::close_streams`] is called
//! (`ferry serve` does so on shutdown, so an open console does not hold the graceful drain).

use super::console::ConsoleOptions;
use super::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferry::pool::LifecycleEvent;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

/// The route handler.
pub async fn events(
    State(st): State<AppState>,
    console: Option<Extension<ConsoleOptions>>,
) -> Response {
    // Subscribe now, before the answer starts, so nothing after `open` is missed.
    let mut names = Vec::new();
    let mut receivers = Vec::new();
    for name in st.orch.worker_types() {
        if let Ok(pool) = st.orch.pool(name) {
            names.push(name.to_owned());
            receivers.push((name.to_owned(), pool.events()));
        }
    }
    let closed = console.map(|Extension(c)| c.closed());
    let open = stream::once(async move {
        Event::default()
            .event("open")
            .data(json!({ "worker_types": names }).to_string())
    });
    let body = open
        .chain(lifecycle_stream(receivers, closed))
        .map(Ok::<_, Infallible>);
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One stream of the events of every receiver, `lifecycle` and `resync` events, ending when
/// every receiver's channel closes or when `closed` turns true.
pub(crate) fn lifecycle_stream(
    receivers: Vec<(String, broadcast::Receiver<LifecycleEvent>)>,
    closed: Option<watch::Receiver<bool>>,
) -> impl Stream<Item = Event> + Send + 'static {
    let merged = stream::select_all(receivers.into_iter().map(|(worker_type, rx)| {
        Box::pin(stream::unfold(
            (worker_type, rx),
            |(worker_type, mut rx)| async move {
                let event = match rx.recv().await {
                    Ok(e) => lifecycle_event(&e),
                    Err(RecvError::Lagged(skipped)) => Event::default()
                        .event("resync")
                        .data(json!({"worker_type": worker_type, "skipped": skipped}).to_string()),
                    Err(RecvError::Closed) => return None,
                };
                Some((event, (worker_type, rx)))
            },
        ))
    }));
    merged.take_until(async move {
        match closed {
            Some(mut rx) => {
                let _ = rx.wait_for(|closed| *closed).await;
            }
            None => std::future::pending::<()>().await,
        }
    })
}

fn lifecycle_event(e: &LifecycleEvent) -> Event {
    let mut data = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut data {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        fields.insert("at_ms".into(), at_ms.into());
    }
    Event::default().event("lifecycle").data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use ferry::pool::LifecycleKind;

    fn event(id: &str) -> LifecycleEvent {
        LifecycleEvent {
            worker_type: "echo".into(),
            worker_id: id.into(),
            kind: LifecycleKind::Ready,
            pid: Some(7),
            detail: String::new(),
            device: None,
            data: None,
        }
    }

    /// The wire text of a stream of events (ends when the stream ends).
    async fn wire(s: impl Stream<Item = Event> + Send + 'static) -> String {
        let sse = Sse::new(s.map(Ok::<_, Infallible>)).into_response();
        let bytes = axum::body::to_bytes(sse.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn lagged_receiver_gets_a_resync_and_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        for i in 0..5 {
            tx.send(event(&format!("w{i}"))).unwrap();
        }
        drop(tx);
        let text = wire(lifecycle_stream(vec![("echo".into(), rx)], None)).await;
        assert!(
            text.starts_with("event: resync\ndata: {\"skipped\":3,\"worker_type\":\"echo\"}\n\n"),
            "{text}"
        );
        assert!(text.contains("\"worker_id\":\"w3\""), "{text}");
        assert!(text.contains("\"worker_id\":\"w4\""), "{text}");
        assert!(!text.contains("\"worker_id\":\"w2\""), "{text}");
        assert_eq!(text.matches("event: lifecycle").count(), 2, "{text}");
    }

    #[tokio::test]
    async fn ends_when_closed() {
        let (tx, rx) = broadcast::channel(4);
        let (close, closed) = watch::channel(false);
        tx.send(event("w0")).unwrap();
        let task = tokio::spawn(wire(lifecycle_stream(
            vec![("echo".into(), rx)],
            Some(closed),
        )));
        tokio::task::yield_now().await;
        close.send_replace(true);
        let text = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the stream ends once closed")
            .unwrap();
        // The sender is still alive: only the switch ended it.
        drop(tx);
        assert!(!text.contains("resync"), "{text}");
    }
}
