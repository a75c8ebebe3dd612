//! Request limits checked before routing, and the JSON shape for every error answer.
//!
//! [`enforce`] refuses a request target longer than `max_uri_bytes` (`414`), more than
//! [`MAX_HEADERS`] headers or more than `max_header_bytes` of them (`431`), and a
//! declared `Content-Length` above `body_limit_bytes` (`413`, before any of the body is
//! read, unless it is small enough to discard); it gives the body a deadline of
//! `body_timeout_ms` (`408` past it). These answers close the connection. [`json_errors`] turns any error answer that is
//! not JSON (a framework rejection) into `{"error": {"code", "message", "retryable"}}`.

use super::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The most headers a request may carry (`431 headers_too_large` beyond).
pub const MAX_HEADERS: usize = 100;

/// A body declared over the limit but no larger than this is read and discarded before
/// the `413`, so the connection can be kept; a larger one is refused at once and the
/// connection closed.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// The request body did not arrive in full before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// The limits [`enforce`] checks.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_uri_bytes: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) body_limit_bytes: u64,
    pub(crate) body_timeout: Duration,
}

impl Limits {
    pub(crate) fn new(server: &crate::config::ServerConfig) -> Self {
        Limits {
            max_uri_bytes: server.max_uri_bytes,
            max_header_bytes: server.max_header_bytes,
            body_limit_bytes: u64::try_from(server.body_limit_bytes).unwrap_or(u64::MAX),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
        }
    }
}

/// The length of the request target as sent.
fn uri_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

/// Header bytes as sent: `name: value\r\n` each.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// An error answer after which the connection is closed (the rest of the request, if
/// any, is not read).
fn refuse(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Checks the request against `limits` and puts a deadline on its body.
pub(crate) async fn enforce(
    State(limits): State<Arc<Limits>>,
    req: Request,
    next: Next,
) -> Response {
    if uri_len(req.uri()) > limits.max_uri_bytes {
        return refuse(ApiError::from_status(
            StatusCode::URI_TOO_LONG,
            format!("the request target exceeds {} bytes", limits.max_uri_bytes),
        ));
    }
    if req.headers().len() > MAX_HEADERS {
        return refuse(ApiError::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("more than {MAX_HEADERS} headers"),
        ));
    }
    if header_bytes(req.headers()) > limits.max_header_bytes {
        return refuse(ApiError::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the headers exceed {} bytes", limits.max_header_bytes),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > limits.body_limit_bytes) {
        let error = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the declared body of {declared} bytes exceeds the limit of {} bytes",
                limits.body_limit_bytes
            ),
        );
        if declared <= DRAIN_MAX_BYTES {
            // Small enough to read and discard: the connection stays usable.
            let drained = tokio::time::timeout(
                limits.body_timeout,
                axum::body::to_bytes(req.into_body(), DRAIN_MAX_BYTES as usize),
            )
            .await;
            if matches!(drained, Ok(Ok(_))) {
                return error.into_response();
            }
        }
        return refuse(error);
    }
    let (parts, body) = req.into_parts();
    let body = if http_body::Body::is_end_stream(&body) {
        body
    } else {
        Body::new(DeadlineBody {
            inner: body,
            deadline: tokio::time::Instant::now() + limits.body_timeout,
            sleep: None,
            timeout: limits.body_timeout,
            expired: false,
        })
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        // The body is still (slowly) on its way: do not wait for the rest of it.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
///
/// The timer is armed the first time the body is not ready: a body that came with its
/// head (most do) is read without touching the runtime's timer wheel.
struct DeadlineBody {
    inner: Body,
    /// When the body must have arrived (set when the request came in).
    deadline: tokio::time::Instant,
    /// The timer for `deadline`, armed at the first `Pending` read.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    expired: bool,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if !this.expired {
            if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
                return Poll::Ready(frame);
            }
            let deadline = this.deadline;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.expired = true;
        }
        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        !self.expired && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The largest non-JSON error body kept as the message of the JSON error replacing it.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Turns an error answer that is not JSON into the API's JSON error shape, keeping its
/// status and headers (`Allow`, `Connection`, ...).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut json = ApiError::from_status(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name.clone(), value.clone());
        }
    }
    json
}
