//! What a worker's code implements, and what it gets while running.

use super::runtime::Io;
use crate::protocol::{Envelope, ErrorBody, ErrorCode, Metrics, EVENT_PROGRESS};
use crate::transport::TransportError;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::time::Instant;

/// `null`, for requests without data.
static NULL: Value = Value::Null;

/// One request as the handler sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The full envelope (operation, data, priority, deadline, ...).
    pub envelope: &'a Envelope,
    /// The binary attachments, borrowed from the receive buffer (on shm, from the ring).
    /// A slice rather than a vector: the runtime lists them on its stack (up to four), so
    /// a request costs no allocation for the list.
    pub attachments: &'a [&'a [u8]],
}

impl Request<'_> {
    /// The operation name.
    pub fn operation(&self) -> &str {
        self.envelope.operation.as_deref().unwrap_or_default()
    }

    /// The request data (`null` when absent).
    pub fn data(&self) -> &Value {
        self.envelope.data.as_ref().unwrap_or(&Value::Null)
    }
}

impl<'a> Request<'a> {
    /// The request data (`null` when absent), for as long as the request itself lives: what
    /// a [`ReplyRef`] may borrow.
    pub fn data_ref(&self) -> &'a Value {
        self.envelope.data.as_ref().unwrap_or(&NULL)
    }
}

/// A handler's successful answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The response data.
    pub data: Value,
    /// Binary attachments (raw on framed links, base64 on stdio).
    pub attachments: Vec<Vec<u8>>,
    /// Optional measurements.
    pub metrics: Option<Metrics>,
}

impl Reply {
    /// A reply with data only.
    pub fn data(data: Value) -> Self {
        Reply {
            data,
            ..Reply::default()
        }
    }
}

/// A handler's answer that may borrow from the request it answers (its data, its
/// attachments), so that they are sent back without being copied; see
/// [`Handler::handle_borrowed`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyRef<'a> {
    /// The response data.
    pub data: Cow<'a, Value>,
    /// Binary attachments (raw on framed links, base64 on stdio).
    pub attachments: Vec<Cow<'a, [u8]>>,
    /// Optional measurements.
    pub metrics: Option<Metrics>,
}

impl From<Reply> for ReplyRef<'_> {
    fn from(reply: Reply) -> Self {
        ReplyRef {
            data: Cow::Owned(reply.data),
            attachments: reply.attachments.into_iter().map(Cow::Owned).collect(),
            metrics: reply.metrics,
        }
    }
}

/// A handler's failure; becomes an `error` message with this code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// The code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl HandlerError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    /// The request's data is invalid.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// An unexpected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The request was cancelled (or its deadline passed) and the handler stopped.
    pub fn cancelled() -> Self {
        Self::new(ErrorCode::Cancelled, "cancelled")
    }

    pub(crate) fn into_body(self) -> ErrorBody {
        ErrorBody::new(self.code, self.message)
    }
}

/// A worker's request handler. Closures `FnMut(&Request, &mut Context) -> Result<Reply,
/// HandlerError>` are handlers.
pub trait Handler {
    /// Serves one request. Long handlers should call [`Context::is_cancelled`] now and then:
    /// that is also when the worker answers `health` probes and sees cancels.
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError>;

    /// What the runtime calls: like [`handle`](Self::handle), with an answer that may
    /// borrow the request's data and attachments (an echo, a pass-through) so that the
    /// runtime sends them from the receive buffer instead of a copy. The default calls
    /// `handle`.
    fn handle_borrowed<'r>(
        &mut self,
        request: &Request<'r>,
        ctx: &mut Context<'_>,
    ) -> Result<ReplyRef<'r>, HandlerError> {
        self.handle(request, ctx).map(ReplyRef::from)
    }

    /// Whether requests for `operation` are served straight from the transport's memory
    /// where it lends frames in place (shm): the request's data and attachments are read
    /// inside the ring, and a [`ReplyRef`] borrowing them is sent from there, with no copy
    /// out of the ring first. The default is `false`: the request is copied out and the
    /// ring space given back before the handler runs.
    ///
    /// Say `true` only for operations that return quickly. While such a handler runs, the
    /// frame's ring space is held (the host's later sends may wait for it once the ring is
    /// full) and the link is not drained: [`Context::is_cancelled`] sees only the deadline,
    /// and `health` probes are answered after the call.
    ///
    /// ```
    /// use ferry::worker::{Context, Handler, HandlerError, Reply, Request};
    /// struct Sum;
    /// impl Handler for Sum {
    ///     fn handle(&mut self, req: &Request<'_>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
    ///         let total: u64 = req.attachments.iter().flat_map(|a| a.iter()).map(|b| u64::from(*b)).sum();
    ///         Ok(Reply::data(total.into()))
    ///     }
    ///     fn in_place(&self, operation: &str) -> bool {
    ///         operation == "sum"
    ///     }
    /// }
    /// assert!(Sum.in_place("sum"));
    /// ```
    fn in_place(&self, operation: &str) -> bool {
        let _ = operation;
        false
    }

    /// Whether the runtime times requests for `operation` and answers with the handler's
    /// wall time in `metrics.processing_time_ms` (when the handler's reply sets none). The
    /// default is `true`.
    ///
    /// Timing costs two clock reads per request, on the answer's path: 5-7% of a 64 B
    /// shared-memory round trip (docs/benchmarks.md, "eighth round"). Say `false` for
    /// operations so quick that the measurement is noise next to its cost (an echo, a
    /// lookup); their answers carry the metrics the handler sets, if any.
    ///
    /// ```
    /// use ferry::worker::{Context, Handler, HandlerError, Reply, Request};
    /// struct Lookup;
    /// impl Handler for Lookup {
    ///     fn handle(&mut self, req: &Request<'_>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
    ///         Ok(Reply::data(req.data().clone()))
    ///     }
    ///     fn timed(&self, operation: &str) -> bool {
    ///         operation != "get"
    ///     }
    /// }
    /// assert!(!Lookup.timed("get"));
    /// assert!(Lookup.timed("train"));
    /// ```
    fn timed(&self, operation: &str) -> bool {
        let _ = operation;
        true
    }
}

impl<F> Handler for F
where
    F: FnMut(&Request<'_>, &mut Context<'_>) -> Result<Reply, HandlerError>,
{
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
        self(request, ctx)
    }
}

/// What a running handler can do besides computing: report progress, see cancellation.
pub struct Context<'a> {
    pub(super) io: &'a mut Io,
    pub(super) request_id: &'a str,
    pub(super) deadline: Option<Instant>,
    pub(super) cancelled: bool,
}

impl Context<'_> {
    /// The id of the request being served.
    pub fn request_id(&self) -> &str {
        self.request_id
    }

    /// When the request's deadline passes, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends a `progress` event: `fraction` in 0..=1, a stage name and a message.
    pub fn progress(
        &mut self,
        fraction: f64,
        stage: &str,
        message: &str,
    ) -> Result<(), TransportError> {
        let data =
            json!({"progress": fraction.clamp(0.0, 1.0), "stage": stage, "message": message});
        self.event(EVENT_PROGRESS, data)
    }

    /// Sends any event about this request.
    pub fn event(&mut self, name: &str, data: Value) -> Result<(), TransportError> {
        let env = Envelope::event(
            self.io.next_id(),
            Some(self.request_id.to_owned()),
            name,
            data,
        );
        self.io.send(&env, &[])
    }

    /// Whether the host cancelled this request, its deadline passed, or the host is gone.
    /// Reads any messages waiting without blocking: answers `health` probes and queues
    /// other requests for later.
    pub fn is_cancelled(&mut self) -> bool {
        if !self.cancelled {
            self.io.pump(self.request_id, &mut self.cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.cancelled = true;
        }
        self.cancelled
    }

    /// Ends the serve loop once this request is answered, as the `shutdown` operation
    /// does: [`serve`](super::serve) then returns `Ok(())`. For workers that must exit
    /// after a request (the Python SDK uses it when a handler raises `SystemExit`).
    pub fn stop_serving(&mut self) {
        self.io.request_stop();
    }

    /// `Err(cancelled)` when [`is_cancelled`](Self::is_cancelled), for use with `?`.
    pub fn check_cancelled(&mut self) -> Result<(), HandlerError> {
        if self.is_cancelled() {
            Err(HandlerError::cancelled())
        } else {
            Ok(())
        }
    }
}
