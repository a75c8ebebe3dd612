//! Connecting to the host and serving it: the Rust runtime's loop with a Python handler.
//!
//! [`connect`] opens the transport the host chose (`FERRY_TRANSPORT`, read by
//! `ferry::transport::worker_link`), which for stdio also takes the protocol off fds 0/1,
//! so it runs before any user module is imported. [`Connection::serve`] then runs
//! `ferry::worker::serve_link` with the GIL released; the loop blocks in `recv` without
//! the GIL and attaches to Python only to call the handler. Every transport and codec the
//! Rust crate has is therefore available here with no Python-side change.

use crate::context::NativeContext;
use crate::convert;
use crate::error::NativeError;
use ferry::codec::Codec;
use ferry::protocol::{ErrorCode, Metrics, Priority, ReadyInfo};
use ferry::transport::{worker_link, Link};
use ferry::worker::env::WorkerEnv;
use ferry::worker::{serve_link, Context, Handler, HandlerError, Reply, Request};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyTuple};
use std::sync::{Mutex, PoisonError};

/// The worker's end of the link to its host, not yet served.
#[pyclass(name = "Connection", module = "ferry_worker._native", frozen)]
pub struct Connection {
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
    let link = worker_link(&env).map_err(NativeError::from)?;
    let codec = Codec::new(env.codec, link.framing, env.max_frame).map_err(NativeError::from)?;
    Ok(Connection {
        link: Mutex::new(Some((link, codec))),
        transport: env.transport.as_str(),
        codec: env.codec.as_str(),
    })
}

#[pymethods]
impl Connection {
    /// The transport's name (`stdio`, ...).
    #[getter]
    fn transport(&self) -> &'static str {
        self.transport
    }

    /// The codec's name (`json`, ...).
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec
    }

    /// Sends `ready`, then serves requests until the host sends `shutdown` or goes away.
    ///
    /// `dispatch(operation, request_id, data, attachments, deadline_ms, priority, ctx)`
    /// is called for each request of a served operation and returns
    /// `(True, data, attachments | None, metrics | None)` or `(False, code, message, None)`.
    /// A `BaseException` that is not an `Exception` (`SystemExit`, `KeyboardInterrupt`)
    /// escaping it answers that request `internal`, ends the loop, and is re-raised here.
    fn serve(
        &self,
        py: Python<'_>,
        worker_type: String,
        operations: Vec<String>,
        dispatch: Py<PyAny>,
        runtime: String,
    ) -> PyResult<()> {
        let (link, codec) = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(NativeError::AlreadyServed)?;
        let mut info = ReadyInfo::new(worker_type, operations);
        info.runtime = Some(runtime);
        let mut handler = PyHandler {
            dispatch,
            exit: None,
        };
        let served = py.detach(|| {
            serve_link(
                link,
                codec,
                info,
                |req: &Request<'_>, ctx: &mut Context<'_>| handler.handle(req, ctx),
            )
        });
        if let Some(exit) = handler.exit.take() {
            return Err(exit);
        }
        served.map_err(|e| NativeError::from(e).into())
    }
}

/// Calls the Python dispatcher for each request.
struct PyHandler {
    dispatch: Py<PyAny>,
    /// A `SystemExit`/`KeyboardInterrupt` raised by a handler, re-raised after the loop.
    exit: Option<PyErr>,
}

impl Handler for PyHandler {
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
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

impl PyHandler {
    fn call(
        &self,
        py: Python<'_>,
        request: &Request<'_>,
        ctx: &Bound<'_, NativeContext>,
    ) -> Result<Reply, Failure> {
        let env = request.envelope;
        let data = convert::to_py(py, request.data())
            .map_err(|e| Failure::Handler(HandlerError::internal(format!("request data: {e}"))))?;
        let attachments = PyList::new(py, request.attachments.iter().map(|a| PyBytes::new(py, a)))
            .map_err(|e| Failure::Handler(HandlerError::internal(e.to_string())))?;
        let priority = env.priority.map(Priority::as_str);
        let args = (
            request.operation(),
            env.message_id.as_str(),
            data,
            attachments,
            env.deadline_ms,
            priority,
            ctx,
        );
        let answer = match self.dispatch.bind(py).call1(args) {
            Ok(answer) => answer,
            Err(e) if e.is_instance_of::<PyException>(py) => {
                // The dispatcher turns handler exceptions into answers; one escaping it is
                // a bug in the SDK, still answered rather than fatal.
                return Err(Failure::Handler(HandlerError::internal(e.to_string())));
            }
            Err(e) => return Err(Failure::Exit(e)),
        };
        read_answer(&answer).map_err(Failure::Handler)
    }
}

/// Reads the dispatcher's `(ok, a, b, c)` tuple.
fn read_answer(answer: &Bound<'_, PyAny>) -> Result<Reply, HandlerError> {
    let bad = |what: String| HandlerError::internal(what);
    let tuple = answer
        .cast::<PyTuple>()
        .map_err(|_| bad("dispatcher returned something other than a tuple".into()))?;
    let item = |i: usize| {
        tuple
            .get_item(i)
            .map_err(|_| bad("dispatcher returned a short tuple".into()))
    };
    let ok: bool = item(0)?.is_truthy().unwrap_or(false);
    if !ok {
        let code: String = item(1)?.extract().unwrap_or_else(|_| "internal".into());
        let message: String = item(2)?.extract().unwrap_or_default();
        let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal);
        return Err(HandlerError::new(code, message));
    }
    let data = convert::from_py(&item(1)?)
        .map_err(|e| bad(format!("the handler's answer is not JSON: {e}")))?;
    let attachments = item(2)?;
    let attachments = if attachments.is_none() {
        Vec::new()
    } else {
        attachments
            .try_iter()
            .and_then(|it| it.map(|a| a.and_then(|a| buffer_bytes(&a))).collect())
            .map_err(|e| bad(format!("the handler's attachments: {e}")))?
    };
    let metrics = item(3)?;
    let metrics = if metrics.is_none() {
        None
    } else {
        let value =
            convert::from_py(&metrics).map_err(|e| bad(format!("the handler's metrics: {e}")))?;
        Some(
            serde_json::from_value::<Metrics>(value)
                .map_err(|e| bad(format!("the handler's metrics: {e}")))?,
        )
    };
    Ok(Reply {
        data,
        attachments,
        metrics,
    })
}

/// The bytes of `bytes`, `bytearray`, or any object exporting a byte buffer (`memoryview`).
fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    let buffer = pyo3::buffer::PyBuffer::<u8>::get(obj).map_err(|e| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "an attachment must be bytes, bytearray or a byte buffer (memoryview(x).cast('B')), got {}: {e}",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    buffer.to_vec(obj.py())
}
