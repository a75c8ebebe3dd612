//! Connecting to the host and serving it: the Rust runtime's loop with a Python handler.
//!
//! [`connect`] opens the transport the host chose (`FERRY_TRANSPORT`, read by
//! `ferry::transport::worker_link`), which for stdio also takes the protocol off fds 0/1,
//! so it runs before any user module is imported. [`Connection::serve`] then runs
//! `ferry::worker::serve_link` with the GIL released; the loop blocks in `recv` without
//! the GIL and attaches to Python only to call the handler. Every transport and codec the
//! Rust crate has is therefore available here with no Python-side change.
//!
//! Raw operations (`raw_operations`) get a [`RawRequest`] whose attachments are lent from
//! the receive buffer ([`crate::buffers`]); the handler answers through
//! [`Handler::handle_borrowed`], so an echoed view is sent from that buffer.
//!
//! Handlers the worker hands over by exact name (`handlers`) are called here directly, not
//! through the Python dispatcher: one Python frame and its lookups fewer per request.

use crate::buffers::{Tracker, TrackingReceiver};
use crate::context::NativeContext;
use crate::error::{FerryError, NativeError};
use crate::message::{self, RawRequest};
use ferry::codec::Codec;
use ferry::protocol::ReadyInfo;
use ferry::transport::{worker_link, Link};
use ferry::worker::env::WorkerEnv;
use ferry::worker::{serve_link, Context, Handler, HandlerError, Reply, ReplyRef, Request};
use pyo3::exceptions::PyException;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The worker's end of the link to its host, not yet served.
#[pyclass(name = "Connection", module = "ferry_worker._native", frozen)]
pub struct Connection {
    /// The host's offers (frame header, stdio framing), accepted in `ready`.
    env: WorkerEnv,
    /// The link's framing before any switch.
    framing: ferry::codec::Framing,
    link: Mutex<Option<(Link, Codec)>>,
    transport: &'static str,
    codec: &'static str,
}

/// Opens the channel the host set up (see `docs/protocol.md`, "The channel").
#[pyfunction]
pub fn connect() -> PyResult<Connection> {
    crate::logging::init();
    let env = WorkerEnv::from_env().map_err(NativeError::from)?;
    // Ends the Python process within a moment of its host's death, even while a handler
    // holds the GIL in a long step: a Rust thread calls `_exit`, which needs no GIL.
    ferry::worker::watchdog::start();
    let link = worker_link(env.transport, env.max_frame).map_err(NativeError::from)?;
    let codec = Codec::new(env.codec, link.framing, env.max_frame).map_err(NativeError::from)?;
    // The compact frame header (docs/protocol.md, section 9) and length-prefixed frames on
    // stdio (section 10) when the host offers them: the runtime implements both for Python
    // handlers too (accepted in `serve`).
    let framing = link.framing;
    Ok(Connection {
        link: Mutex::new(Some((link, codec))),
        framing,
        transport: env.transport.as_str(),
        // What the frames after `ready` are in: the stdio offer's codec when it is taken.
        codec: env
            .accepted_stdio_codec(framing)
            .unwrap_or(env.codec)
            .as_str(),
        env,
    })
}

#[pymethods]
impl Connection {
    /// The transport's name (`stdio`, ...).
    #[getter]
    fn transport(&self) -> &'static str {
        self.transport
    }

    /// The codec's name (`json`, ...): of the frames after `ready` (on stdio switched to
    /// length-prefixed frames, the offered codec, not `FERRY_CODEC`).
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec
    }

    /// Sends `ready`, then serves requests until the host sends `shutdown` or goes away.
    ///
    /// `dispatch(request)` is called with a `Request` for each request of a served
    /// operation and gives back a `Reply` or a `FerryError` (returned or raised). Any other
    /// `Exception` escaping it is a bug in the dispatcher, answered `internal`. A
    /// `BaseException` that is not an `Exception` (`SystemExit`, `KeyboardInterrupt`)
    /// answers that request `internal`, ends the loop, and is re-raised here.
    ///
    /// A request is served by one entry of `operations`, as `Worker` picks it: the exact name,
    /// else the longest prefix ending in `*`. When that entry is in `raw_operations`,
    /// `dispatch` gets a `RawRequest`; when it is in `untimed_operations`, the request is
    /// not timed (no `processing_time_ms` unless the reply sets one). An entry of either
    /// list that is not in `operations` is a `ValueError`.
    ///
    /// `handlers` lets the loop skip `dispatch` for the operations it names (exact names of
    /// `operations`, no prefixes): it calls `handlers[name](request, context)` itself. A
    /// `Reply` it returns is answered as it is; any other result `r` is answered with
    /// `settle(request, r)`, and an exception `e` it raises with `failed(request, e)`, both
    /// of which return what `dispatch` would have (and may raise as it would). `handlers`
    /// without `settle` and `failed`, or naming what `operations` does not serve by exact
    /// name, is a `ValueError`.
    #[pyo3(signature = (
        worker_type,
        operations,
        dispatch,
        runtime,
        raw_operations = Vec::new(),
        untimed_operations = Vec::new(),
        handlers = None,
        settle = None,
        failed = None,
    ))]
    // Why allowed: the arguments are the Python method's, keyword-compatible with callers
    // written before the later ones existed.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        worker_type: String,
        operations: Vec<String>,
        dispatch: Py<PyAny>,
        runtime: String,
        raw_operations: Vec<String>,
        untimed_operations: Vec<String>,
        handlers: Option<Bound<'_, PyDict>>,
        settle: Option<Py<PyAny>>,
        failed: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        for (list, entries) in [
            ("raw_operations", &raw_operations),
            ("untimed_operations", &untimed_operations),
        ] {
            if let Some(stray) = entries.iter().find(|e| !operations.contains(e)) {
                return Err(PyValueError::new_err(format!(
                    "{list} names `{stray}`, which is not one of the operations served"
                )));
            }
        }
        let direct = Direct::new(handlers, settle, failed, &operations)?;
        let exact = ExactOperation::table(py, &operations, &raw_operations);
        let (mut link, codec) = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(NativeError::AlreadyServed)?;
        let tracker = Tracker::default();
        if !raw_operations.is_empty() {
            // Only raw handlers get views over the receive buffer: the others keep the
            // transport's receiver as it is.
            link.receiver = Box::new(TrackingReceiver::new(link.receiver, tracker.clone()));
        }
        let mut info = ReadyInfo::new(worker_type, operations.clone());
        info.runtime = Some(runtime);
        self.env.accept_offers(self.framing, &mut info);
        let mut handler = PyHandler {
            dispatch,
            operations,
            raw: raw_operations,
            untimed: untimed_operations,
            tracker: tracker.clone(),
            exact,
            direct,
            exit: None,
        };
        let served = py.detach(|| serve_link(link, codec, info, &mut handler));
        let stranded = tracker.stranded();
        if stranded > 0 {
            // A buffer exported from a request's attachment outlived its call, and the
            // runtime stopped without handing that receive buffer over (it freed it). Ending
            // here is the only way nothing reads that memory afterwards.
            eprintln!(
                "ferry_worker: {stranded} buffer(s) exported from request attachments were \
                 kept past their call when serving ended; aborting rather than leaving them \
                 over freed memory"
            );
            std::process::abort();
        }
        if let Some(exit) = handler.exit.take() {
            return Err(exit);
        }
        served.map_err(|e| NativeError::from(e).into())
    }
}

/// Calls the Python dispatcher for each request.
struct PyHandler {
    dispatch: Py<PyAny>,
    /// Every operation served: exact names, and prefixes ending in `*`.
    operations: Vec<String>,
    /// Those of `operations` served by raw handlers.
    raw: Vec<String>,
    /// Those of `operations` not timed ([`Handler::timed`]).
    untimed: Vec<String>,
    /// Where frames land, for lending raw handlers their attachments in place.
    tracker: Tracker,
    /// The operations served by exact name.
    exact: HashMap<String, ExactOperation>,
    /// The handlers the loop calls without `dispatch`, if any.
    direct: Option<Direct>,
    /// A `SystemExit`/`KeyboardInterrupt` raised by a handler, re-raised after the loop.
    exit: Option<PyErr>,
}

impl Handler for &mut PyHandler {
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
        self.handle_borrowed(request, ctx).map(|reply| Reply {
            data: reply.data.into_owned(),
            attachments: reply.attachments.into_iter().map(Cow::into_owned).collect(),
            metrics: reply.metrics,
        })
    }

    fn handle_borrowed<'r>(
        &mut self,
        request: &Request<'r>,
        ctx: &mut Context<'_>,
    ) -> Result<ReplyRef<'r>, HandlerError> {
        Python::attach(|py| {
            let native = Bound::new(py, NativeContext::lend(ctx))
                .map_err(|e| HandlerError::internal(format!("cannot create the context: {e}")))?;
            let outcome = {
                // Ends the loan when the call is over, even if it panics.
                let loan = Loan(&native);
                self.call(py, request, loan.0)
            };
            match outcome {
                Ok(reply) => Ok(reply),
                Err(Failure::Handler(e)) => Err(e),
                Err(Failure::Exit(e)) => {
                    let message = format!("worker is exiting: {e}");
                    self.exit = Some(e);
                    ctx.stop_serving();
                    Err(HandlerError::internal(message))
                }
            }
        })
    }

    fn timed(&self, operation: &str) -> bool {
        !self.registered_in(&self.untimed, operation)
    }
}

/// The registration that serves `operation`, as `Worker` picks it: its exact name (never a
/// pattern, even one spelled like the operation), else the longest prefix (`"device.*"`) it
/// starts with.
fn serving<'a>(operations: &'a [String], operation: &str) -> Option<&'a str> {
    if let Some(exact) = operations
        .iter()
        .find(|o| *o == operation && !o.ends_with('*'))
    {
        return Some(exact);
    }
    operations
        .iter()
        .filter(|o| {
            o.strip_suffix('*')
                .is_some_and(|p| operation.starts_with(p))
        })
        .max_by_key(|o| o.len())
        .map(String::as_str)
}

/// Releases the lent context on drop.
struct Loan<'a, 'py>(&'a Bound<'py, NativeContext>);

impl Drop for Loan<'_, '_> {
    fn drop(&mut self) {
        self.0.get().release();
    }
}

enum Failure {
    Handler(HandlerError),
    Exit(PyErr),
}

/// Revokes a raw request's views on drop (when the call is over, even if it unwinds).
struct Revoke<'a, 'py> {
    request: &'a Bound<'py, RawRequest>,
    tracker: &'a Tracker,
}

impl Drop for Revoke<'_, '_> {
    fn drop(&mut self) {
        self.request.get().revoke(self.request.py(), self.tracker);
    }
}

impl PyHandler {
    fn is_raw(&self, operation: &str) -> bool {
        self.registered_in(&self.raw, operation)
    }

    /// Whether the registration serving `operation` is one of `set` (so an exact name
    /// registered plainly is not raw, or untimed, because a prefix over it is).
    fn registered_in(&self, set: &[String], operation: &str) -> bool {
        // An empty set (most workers: no raw, no untimed operation) costs no lookup.
        !set.is_empty()
            && serving(&self.operations, operation).is_some_and(|r| set.iter().any(|s| s == r))
    }

    fn call<'r>(
        &self,
        py: Python<'_>,
        request: &Request<'r>,
        ctx: &Bound<'_, NativeContext>,
    ) -> Result<ReplyRef<'r>, Failure> {
        let bad_request =
            |e: PyErr| Failure::Handler(HandlerError::internal(format!("the request: {e}")));
        let exact = self.exact.get(request.operation());
        let (operation, raw) = match exact {
            Some(op) => (op.name.bind(py).clone(), op.raw),
            None => (
                PyString::new(py, request.operation()),
                self.is_raw(request.operation()),
            ),
        };
        let handler = match (exact, &self.direct) {
            // Looked up per request in the worker's own dict, so a handler registered
            // again while serving is the one called.
            (Some(_), Some(direct)) => direct
                .handlers
                .bind(py)
                .get_item(&operation)
                .map_err(bad_request)?,
            _ => None,
        };
        let operation = operation.unbind();
        if raw {
            let raw = message::RawRequest::from_wire(py, request, operation, ctx, &self.tracker)
                .and_then(|r| Bound::new(py, r))
                .map_err(bad_request)?;
            let _revoke = Revoke {
                request: &raw,
                tracker: &self.tracker,
            };
            let answer = self.run(py, handler.as_ref(), raw.as_any(), ctx);
            return self.answer(py, answer, request.attachments);
        }
        let plain = message::Request::from_wire(py, request, operation, ctx)
            .and_then(|r| Bound::new(py, r))
            .map_err(bad_request)?;
        let answer = self.run(py, handler.as_ref(), plain.as_any(), ctx);
        self.answer(py, answer, &[])
    }

    /// What `dispatch(request)` gives back, or the same from `handler` called here (a
    /// Python frame and its lookups fewer per call: 0.22-0.28 µs, docs/benchmarks.md,
    /// eleventh round).
    fn run<'py>(
        &self,
        py: Python<'py>,
        handler: Option<&Bound<'py, PyAny>>,
        request: &Bound<'py, PyAny>,
        ctx: &Bound<'py, NativeContext>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (Some(handler), Some(direct)) = (handler, &self.direct) else {
            return self.dispatch.bind(py).call1((request,));
        };
        match handler.call1((request, ctx)) {
            Ok(result) if result.cast::<message::Reply>().is_ok() => Ok(result),
            Ok(result) => direct.settle.bind(py).call1((request, result)),
            Err(e) => direct.failed.bind(py).call1((request, e.into_value(py))),
        }
    }

    /// The runtime's answer from what the dispatcher gave back (or raised); `lent` are the
    /// request's attachments a raw handler may answer with in place.
    fn answer<'r>(
        &self,
        py: Python<'_>,
        answer: PyResult<Bound<'_, PyAny>>,
        lent: &[&'r [u8]],
    ) -> Result<ReplyRef<'r>, Failure> {
        match answer {
            Ok(answer) => message::read_answer_ref(&answer, lent).map_err(Failure::Handler),
            Err(e) => {
                if let Ok(error) = e.value(py).cast::<FerryError>() {
                    Err(Failure::Handler(FerryError::to_handler_error(error)))
                } else if e.is_instance_of::<PyException>(py) {
                    // The dispatcher turns handler exceptions into answers; one escaping it
                    // is a bug in the SDK, still answered rather than fatal.
                    Err(Failure::Handler(HandlerError::internal(format!(
                        "the dispatcher raised {e}"
                    ))))
                } else {
                    Err(Failure::Exit(e))
                }
            }
        }
    }
}

/// An operation served by exact name, as the loop keeps it.
struct ExactOperation {
    /// Its name, made once: every request to it shares this string.
    name: Py<PyString>,
    /// Whether it is a raw operation (one of `raw_operations`).
    raw: bool,
}

impl ExactOperation {
    /// One entry per exact name of `operations` (not the prefixes).
    fn table(
        py: Python<'_>,
        operations: &[String],
        raw: &[String],
    ) -> HashMap<String, ExactOperation> {
        operations
            .iter()
            .filter(|o| !o.ends_with('*'))
            .map(|o| {
                let op = ExactOperation {
                    name: PyString::new(py, o).unbind(),
                    raw: raw.contains(o),
                };
                (o.clone(), op)
            })
            .collect()
    }
}

/// The handlers the serve loop calls itself, and the Python functions that finish what
/// they return or raise as the dispatcher would.
struct Direct {
    /// The worker's own `{name: handler}` dict, read per request (so a handler registered
    /// again while serving is the one called).
    handlers: Py<PyDict>,
    /// `settle(request, result)`: the answer for a result that is not a `Reply`.
    settle: Py<PyAny>,
    /// `failed(request, exception)`: the answer for a raised exception (or it re-raises).
    failed: Py<PyAny>,
}

impl Direct {
    /// `None` without `handlers`; a `ValueError` without `settle` and `failed`, or when a
    /// key of `handlers` is not an exact name of `operations`.
    fn new(
        handlers: Option<Bound<'_, PyDict>>,
        settle: Option<Py<PyAny>>,
        failed: Option<Py<PyAny>>,
        operations: &[String],
    ) -> PyResult<Option<Direct>> {
        let Some(handlers) = handlers else {
            return Ok(None);
        };
        let (Some(settle), Some(failed)) = (settle, failed) else {
            return Err(PyValueError::new_err(
                "handlers needs settle and failed, which finish what a handler returns or raises",
            ));
        };
        for name in handlers.keys() {
            let name = name.cast_into::<PyString>().map_err(|e| {
                PyValueError::new_err(format!("handlers: a key is not a str: {}", PyErr::from(e)))
            })?;
            let name = name.to_str()?;
            if name.ends_with('*') || !operations.iter().any(|o| o == name) {
                return Err(PyValueError::new_err(format!(
                    "handlers names `{name}`, which is not one of the operations served by \
                     exact name"
                )));
            }
        }
        Ok(Some(Direct {
            handlers: handlers.unbind(),
            settle,
            failed,
        }))
    }
}
