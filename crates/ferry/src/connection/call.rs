//! A request as a host builds it: operation, data, attachments, priority, deadline and
//! what to do with its events. The connection gives it its message id when it is sent.

use crate::protocol::{Envelope, Event, Priority};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// What a [`Call`] does with each event of its request (progress, a worker's own events).
pub type EventHandler<'a> = Box<dyn FnMut(Event<'_>) + Send + 'a>;

/// One request to a worker, built step by step and sent with
/// [`Pool::send`](crate::pool::Pool::send), [`Pool::send_async`](crate::pool::Pool::send_async)
/// or [`WorkerProcess::send`](crate::worker::WorkerProcess::send).
///
/// It has no message id: the connection that sends it assigns a fresh one (and the
/// worker type and send time, on the wire only), so a `Call` can be sent again, e.g. to
/// another pool, as it is.
///
/// ```
/// use ferry::prelude::*;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let image = vec![0u8; 1024];
/// let call = Call::new("generate")
///     .data(json!({"prompt": "a fox"}))
///     .attachment(&image[..])
///     .priority(Priority::High)
///     .deadline(Duration::from_secs(30))
///     .on_event(|event| {
///         if let Event::Progress(p) = event {
///             println!("{:>3.0}% {}", p.fraction * 100.0, p.message);
///         }
///     });
/// assert_eq!(call.operation(), "generate");
/// assert_eq!(call.envelope().deadline_ms, Some(30_000));
/// assert_eq!(call.attachments().len(), 1);
/// ```
pub struct Call<'a> {
    request: Envelope,
    attachments: Vec<Cow<'a, [u8]>>,
    on_event: Option<EventHandler<'a>>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("request", &self.request)
            .field(
                "attachments",
                &self.attachments.iter().map(|a| a.len()).collect::<Vec<_>>(),
            )
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl<'a> Call<'a> {
    /// A call of `operation` with no data (`null`).
    pub fn new(operation: impl Into<String>) -> Self {
        Call {
            request: Envelope::request(String::new(), operation, Value::Null),
            attachments: Vec::new(),
            on_event: None,
        }
    }

    /// A call from a prepared request envelope: its `message_id` is ignored (the
    /// connection assigns one); every other field is sent as it is.
    pub fn from_envelope(request: Envelope) -> Self {
        Call {
            request,
            attachments: Vec::new(),
            on_event: None,
        }
    }

    /// The request's data (default `null`).
    pub fn data(mut self, data: impl Into<Value>) -> Self {
        self.request.data = Some(data.into());
        self
    }

    /// Adds a binary attachment: borrowed (`&[u8]`, sent without a copy by synchronous
    /// calls) or owned (`Vec<u8>`).
    pub fn attachment(mut self, bytes: impl Into<Cow<'a, [u8]>>) -> Self {
        self.attachments.push(bytes.into());
        self
    }

    /// The scheduling priority in a pool's queue (default normal).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.request.priority = Some(priority);
        self
    }

    /// How long the request may take. The worker sees it (`deadline_ms`, whole
    /// milliseconds, rounded up) and stops; the host stops waiting, cancels the request and
    /// answers `timeout`. Default: the pool's `request_timeout`, or no limit on a lone
    /// worker.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        let ms = deadline.as_millis() + u128::from(deadline.subsec_nanos() % 1_000_000 != 0);
        self.request.deadline_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }

    /// Runs `handler` on each event of the request as it arrives, on the thread that
    /// waits for the answer (the caller's for synchronous calls, the task's for async ones).
    pub fn on_event(mut self, handler: impl FnMut(Event<'_>) + Send + 'a) -> Self {
        self.on_event = Some(Box::new(handler));
        self
    }

    /// The operation.
    pub fn operation(&self) -> &str {
        self.request.operation.as_deref().unwrap_or_default()
    }

    /// The request as it will be sent, less the fields the sender fills in (message id,
    /// worker type, time).
    pub fn envelope(&self) -> &Envelope {
        &self.request
    }

    /// The attachments, in order.
    pub fn attachments(&self) -> &[Cow<'a, [u8]>] {
        &self.attachments
    }

    /// The request, its attachments and its event handler, for a sender.
    pub fn into_parts(self) -> (Envelope, Vec<Cow<'a, [u8]>>, Option<EventHandler<'a>>) {
        (self.request, self.attachments, self.on_event)
    }
}

impl From<Envelope> for Call<'_> {
    fn from(request: Envelope) -> Self {
        Call::from_envelope(request)
    }
}

impl super::Connection {
    /// Sends `call` and waits for the answer on this thread (see [`Pending::wait`]); the
    /// call's event handler sees each event. For callers that hold a connection rather than
    /// a [`WorkerProcess`](crate::worker::WorkerProcess) or a pool.
    ///
    /// [`Pending::wait`]: super::Pending::wait
    pub fn send(
        self: &std::sync::Arc<Self>,
        call: Call<'_>,
    ) -> Result<super::Response, super::CallError> {
        let (request, attachments, mut on_event) = call.into_parts();
        let parts: Vec<&[u8]> = attachments.iter().map(|a| &a[..]).collect();
        let deadline = request
            .deadline_ms
            .map(|ms| std::time::Instant::now() + Duration::from_millis(ms));
        self.start(request, &parts, deadline)?
            .wait(envelope_events(&mut on_event))
    }
}

/// An event callback over envelopes, as the lower-level calls take, from a call's handler.
pub(crate) fn envelope_events<'h, 'a: 'h>(
    handler: &'h mut Option<EventHandler<'a>>,
) -> impl FnMut(&Envelope) + Send + use<'h, 'a> {
    move |env: &Envelope| {
        if let Some(handler) = handler.as_mut() {
            handler(Event::from_envelope(env));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_milliseconds() {
        let ms = |d| Call::new("x").deadline(d).envelope().deadline_ms;
        assert_eq!(ms(Duration::from_millis(1500)), Some(1500));
        assert_eq!(ms(Duration::from_micros(1)), Some(1));
        assert_eq!(ms(Duration::from_micros(2_000_100)), Some(2001));
        assert_eq!(ms(Duration::ZERO), Some(0));
        assert_eq!(ms(Duration::MAX), Some(u64::MAX));
    }

    #[test]
    fn a_call_has_no_message_id_of_its_own() {
        let call = Call::new("echo").data(serde_json::json!({"a": 1}));
        assert_eq!(call.envelope().message_id, "");
        assert_eq!(call.operation(), "echo");
        assert_eq!(call.envelope().data, Some(serde_json::json!({"a": 1})));
    }
}
