//! The HTTP/1.1 server under the API: connection cap, timeouts, graceful shutdown.
//!
//! Each accepted connection takes one of `max_connections` slots; when none is free it
//! takes one of `health_connections` more, on which only `/health` and `/health/*` are
//! served (anything else: `503 overloaded`, connection closed); beyond those the
//! connection is answered `503 overloaded` and closed at once. A connection is closed
//! when it waits longer than `idle_timeout_ms` for the first byte of a request, or when a
//! request head takes longer than `header_timeout_ms` from its first byte. Request body
//! deadlines and size limits are the router's ([`super::limits`]).

use super::error::ApiError;
use super::limits::MAX_HEADERS;
use crate::config::ServerConfig;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// How long accepting pauses after an error such as running out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Bytes of the read buffer beyond the URI and header limits: room for the request line
/// and a little body, so that a head over ferry's limits still reaches [`super::limits`]
/// (which answers JSON) instead of hyper (which answers an empty `431`).
const HEAD_SLACK: usize = 8 * 1024;

/// Serves `app` on `listener` under `server`'s limits until `shutdown` completes, then
/// waits for the requests in flight (callers bound that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    server: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let timeouts = Timeouts {
        header: Duration::from_millis(server.header_timeout_ms),
        idle: Duration::from_millis(server.idle_timeout_ms),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .max_headers(MAX_HEADERS * 2)
        .max_buf_size((server.max_uri_bytes + server.max_header_bytes + HEAD_SLACK).max(8192))
        // ferry's own head and idle deadlines (below) replace hyper's header timeout.
        .header_read_timeout(None);
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let health_slots = Arc::new(Semaphore::new(server.health_connections));
    let graceful = GracefulShutdown::new();
    let refusal = refusal_bytes();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or memory): give connections time to close
                    // instead of spinning on an accept that keeps failing.
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let (permit, health_only) = match slots.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match health_slots.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    // Best effort: the answer fits in the socket buffer of a new connection.
                    let _ = stream.try_write(&refusal);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(Clock::new());
        let service = ConnService {
            app: app.clone(),
            clock: clock.clone(),
            health_only,
        };
        let io = TokioIo::new(Tracked {
            inner: stream,
            clock: clock.clone(),
        });
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            let _permit = permit;
            drive(conn, &clock, timeouts).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection that do not concern the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The raw answer to a connection over every cap.
fn refusal_bytes() -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "overloaded",
        "message": "too many connections",
        "retryable": true,
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Where a connection stands, for its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request (since the connection opened or the last
    /// answer ended).
    Idle,
    /// Reading a request head (since its first byte).
    Head,
    /// A request is being served (its body, the handler, the answer): no deadline here.
    Busy,
}

/// The phase of one connection and when it began.
struct Clock {
    state: Mutex<(Phase, Instant)>,
    /// Wakes [`drive`] to take the new phase's deadline.
    changed: Notify,
}

impl Clock {
    fn new() -> Self {
        Clock {
            state: Mutex::new((Phase::Idle, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        *self.state.lock() = (phase, Instant::now());
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection is now reading a head.
    fn bytes_read(&self) {
        let mut state = self.state.lock();
        if state.0 == Phase::Idle {
            *state = (Phase::Head, Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The deadline of the current phase (`None` while busy), and whether it has passed.
    fn deadline(&self, t: Timeouts) -> (Option<Instant>, bool) {
        let (phase, since) = *self.state.lock();
        let deadline = match phase {
            Phase::Idle => since + t.idle,
            Phase::Head => since + t.header,
            Phase::Busy => return (None, false),
        };
        (Some(deadline), Instant::now() >= deadline)
    }
}

/// Runs `conn` until it ends or a deadline of its [`Clock`] passes (then drops it, which
/// closes the connection).
async fn drive<C: Future>(conn: C, clock: &Clock, timeouts: Timeouts) {
    tokio::pin!(conn);
    loop {
        let (deadline, passed) = clock.deadline(timeouts);
        if passed {
            tracing::debug!("closing a connection past its idle or header deadline");
            return;
        }
        let expiry = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut conn => return,
            _ = clock.changed.notified() => {}
            _ = expiry => {}
        }
    }
}

/// The socket of one connection, telling its [`Clock`] when bytes arrive.
struct Tracked {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether `path` is served on the connections kept for health probes.
fn is_health(path: &str) -> bool {
    path == "/health" || path.starts_with("/health/")
}

/// The router as a hyper service for one connection.
#[derive(Clone)]
struct ConnService {
    app: Router,
    clock: Arc<Clock>,
    health_only: bool,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<EndsRequest>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.clock.set(Phase::Busy);
        let clock = self.clock.clone();
        let refused = self.health_only && !is_health(req.uri().path());
        let app = self.app.clone();
        Box::pin(async move {
            let response = if refused {
                let mut r = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many connections: this one serves /health only",
                )
                .retryable(true)
                .into_response();
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                match app.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            };
            Ok(response.map(|inner| EndsRequest { inner, clock }))
        })
    }
}

/// An answer's body; once it is sent (or dropped) the connection is idle again.
struct EndsRequest {
    inner: Body,
    clock: Arc<Clock>,
}

impl Drop for EndsRequest {
    fn drop(&mut self) {
        self.clock.set(Phase::Idle);
    }
}

impl http_body::Body for EndsRequest {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
