//! A closure as a worker's [`Handler`].

use super::handler::{Context, Handler, HandlerError, Reply, Request};
use crate::protocol::ErrorCode;
use serde_json::Value;

/// A closure as a [`Handler`]: `handler_fn(|request, ctx| ...)` for [`serve`](super::serve).
///
/// The closure answers with anything that converts into a [`Reply`] (a [`Reply`], or a
/// `serde_json::Value` for data alone) or a [`HandlerError`]. Unlike a bare closure passed
/// where a `Handler` is expected, `handler_fn` fixes the closure's argument types, so the
/// closure needs no annotations and can be built before it is served.
///
/// In-process, over a memory link (a real worker calls [`serve`](super::serve), which
/// finds its link from the environment its host set):
///
/// ```
/// use ferry::codec::Codec;
/// use ferry::connection::Connection;
/// use ferry::prelude::*;
/// use ferry::protocol::ReadyInfo;
/// use ferry::transport::memory;
/// use ferry::worker::serve_link;
/// use serde_json::json;
/// use std::time::{Duration, Instant};
///
/// let handler = handler_fn(|request, ctx| match request.operation() {
///     "upper" => {
///         ctx.progress(0.5, "upper", "half way")?;
///         Ok(json!(request.data().as_str().unwrap_or_default().to_uppercase()))
///     }
///     other => Err(HandlerError::unknown_operation(other)),
/// });
///
/// let (host, worker) = memory::pair(1 << 20);
/// let codec = Codec::new(CodecKind::Json, worker.framing, 1 << 20)?;
/// let info = ReadyInfo::new("text", vec!["upper".into()]);
/// let served = std::thread::spawn(move || serve_link(worker, codec, info, handler));
///
/// let conn = Connection::new(host, codec, Dialect::Ferry, "text", None);
/// conn.handshake(Instant::now() + Duration::from_secs(5), Duration::from_secs(5))?;
/// let mut stages = Vec::new();
/// let reply = conn.send(Call::new("upper").data("fox").on_event(|event| {
///     if let Event::Progress(p) = event {
///         stages.push(p.stage);
///     }
/// }))?;
/// assert_eq!(reply.data, json!("FOX"));
/// assert_eq!(stages, ["upper"]);
///
/// let err = conn.send(Call::new("lower")).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::UnknownOperation);
/// conn.close_sender(); // the worker sees the end of its input and returns
/// served.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn handler_fn<F, R>(f: F) -> HandlerFn<F>
where
    F: FnMut(&Request<'_>, &mut Context<'_>) -> Result<R, HandlerError>,
    R: Into<Reply>,
{
    HandlerFn(f)
}

/// A closure as a [`Handler`]; made by [`handler_fn`].
#[derive(Clone, Copy)]
pub struct HandlerFn<F>(F);

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerFn")
    }
}

impl<F, R> Handler for HandlerFn<F>
where
    F: FnMut(&Request<'_>, &mut Context<'_>) -> Result<R, HandlerError>,
    R: Into<Reply>,
{
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
        (self.0)(request, ctx).map(Into::into)
    }
}

impl From<Value> for Reply {
    /// A reply with this data, no attachments and no metrics.
    fn from(data: Value) -> Self {
        Reply::data(data)
    }
}

impl HandlerError {
    /// The worker does not serve `operation`.
    pub fn unknown_operation(operation: &str) -> Self {
        Self::new(
            ErrorCode::UnknownOperation,
            format!("unknown operation `{operation}`"),
        )
    }
}

impl From<crate::transport::TransportError> for HandlerError {
    /// A failure to send an event (the host is gone, a frame too large), so that
    /// [`Context::progress`] and [`Context::event`] work with `?` in a handler.
    fn from(e: crate::transport::TransportError) -> Self {
        if matches!(e, crate::transport::TransportError::Disconnected) {
            HandlerError::cancelled()
        } else {
            HandlerError::new(e.code(), e.to_string())
        }
    }
}
