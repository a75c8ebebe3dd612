//! `NativeContext`: the Python face of the runtime's [`Context`] for one request.
//!
//! The runtime lends its `Context` to the handler for the duration of one call. Python
//! objects can outlive that call (a handler may keep `ctx`, or hand it to a thread), so
//! the Python object holds a pointer that is valid only while the call runs, behind a
//! mutex, and cleared before the call returns. Any use after that is a Python error, not
//! undefined behaviour. The mutex also serialises the handler thread and any helper thread
//! that reports progress through the same context.

use crate::buffers::ReplyBuffer;
use crate::convert;
use crate::error::{cancelled_error, ferry_error};
use ferry::transport::TransportError;
use ferry::worker::Context;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A pointer to the runtime's context for the call in progress.
struct Lent(NonNull<Context<'static>>);

// SAFETY: `Context` is `Send` (checked by `context_is_send` below: it holds `&mut Io`,
// whose fields are all `Send`), so using it from another thread is sound as long as the
// pointer is valid and access is exclusive. Validity: `Lent` is only created in
// `NativeContext::lend` from a live `&mut Context` and removed by `release` before that
// borrow ends. Exclusivity: every dereference happens with the `Mutex` that holds it locked.
unsafe impl Send for Lent {}

const _: () = {
    fn assert_send<T: Send>() {}
    #[allow(dead_code)]
    fn context_is_send() {
        assert_send::<Context<'static>>();
    }
};

/// The context of one request, as handlers see it (`ctx`).
#[pyclass(name = "NativeContext", module = "ferry_worker._native", frozen)]
pub struct NativeContext {
    lent: Mutex<Option<Lent>>,
    request_id: String,
    deadline: Option<Instant>,
}

impl NativeContext {
    /// A context lending `ctx` until [`release`](Self::release).
    ///
    /// The caller must call `release` before the borrow of `ctx` ends; the handler does,
    /// from a drop guard, right after the Python call returns or unwinds.
    pub fn lend(ctx: &mut Context<'_>) -> Self {
        let request_id = ctx.request_id().to_owned();
        let deadline = ctx.deadline();
        let ptr = NonNull::from(ctx).cast::<Context<'static>>();
        NativeContext {
            lent: Mutex::new(Some(Lent(ptr))),
            request_id,
            deadline,
        }
    }

    /// Ends the loan: from now on the Python object refuses to act.
    pub fn release(&self) {
        *self.lent.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs `f` on the lent context; `None` once released.
    fn with<R>(&self, f: impl for<'a> FnOnce(&mut Context<'a>) -> R) -> Option<R> {
        let guard = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
        let lent = guard.as_ref()?;
        // SAFETY: see `Lent`: the pointer is valid while it is in the slot (the handler
        // call that lent it is still running), and the held lock makes this the only
        // access. The reference does not escape `f`, which cannot name its lifetime.
        let ctx = unsafe { &mut *lent.0.as_ptr().cast::<Context<'_>>() };
        Some(f(ctx))
    }

    fn finished(&self) -> PyErr {
        PyRuntimeError::new_err(format!(
            "the context of request {} was used after its handler returned",
            self.request_id
        ))
    }

    fn time_left_s(&self) -> Option<f64> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64())
    }
}

fn send_result(
    py: Python<'_>,
    result: Option<Result<(), TransportError>>,
    ctx: &NativeContext,
) -> PyResult<()> {
    match result {
        None => Err(ctx.finished()),
        Some(Ok(())) => Ok(()),
        // The host is gone: the handler learns it from `cancelled`, like a cancel.
        Some(Err(TransportError::Disconnected)) => Ok(()),
        Some(Err(e)) => Err(ferry_error(py, e.code(), format!("cannot send event: {e}"))),
    }
}

#[pymethods]
impl NativeContext {
    /// The id of the request being served.
    #[getter]
    fn request_id(&self) -> &str {
        &self.request_id
    }

    /// When the request's deadline passes, on the `time.monotonic()` clock; `None` if it
    /// has none.
    #[getter]
    fn deadline(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        static MONOTONIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let Some(left) = self.time_left_s() else {
            return Ok(None);
        };
        let now: f64 = MONOTONIC
            .import(py, "time", "monotonic")?
            .call0()?
            .extract()?;
        Ok(Some(now + left))
    }

    /// Seconds until the deadline (0.0 once passed); `None` if the request has none.
    #[getter]
    fn time_left(&self) -> Option<f64> {
        self.time_left_s()
    }

    /// Whether the host cancelled this request, its deadline passed, or the host is gone.
    /// Reads waiting messages without blocking (answers `health` probes meanwhile).
    /// `True` once the handler has returned.
    #[getter]
    fn cancelled(&self, py: Python<'_>) -> bool {
        py.detach(|| self.with(|ctx| ctx.is_cancelled()))
            .unwrap_or(true)
    }

    /// Raises `ferry_worker.Cancelled` if [`cancelled`](Self::cancelled).
    fn check_cancelled(&self, py: Python<'_>) -> PyResult<()> {
        if self.cancelled(py) {
            Err(cancelled_error(py))
        } else {
            Ok(())
        }
    }

    /// Sends a `progress` event: `fraction` in 0..1 (clamped), a stage and a message.
    #[pyo3(signature = (fraction, stage = "", message = ""))]
    fn progress(&self, py: Python<'_>, fraction: f64, stage: &str, message: &str) -> PyResult<()> {
        let result = py.detach(|| self.with(|ctx| ctx.progress(fraction, stage, message)));
        send_result(py, result, self)
    }

    /// Sends any event about this request: `name` and JSON `data`.
    #[pyo3(signature = (name, data = None))]
    fn event(&self, py: Python<'_>, name: &str, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let value = match data {
            Some(d) => convert::from_py(d)?,
            None => serde_json::Value::Null,
        };
        let result = py.detach(|| self.with(|ctx| ctx.event(name, value)));
        send_result(py, result, self)
    }

    /// A writable buffer of `n` zeroed bytes to answer with as an attachment
    /// (`Reply(None, [buf])`): fill it in place (`numpy.frombuffer(buf, dtype)`,
    /// `memoryview(buf)[...] = ...`) and the runtime sends it with no copy into `bytes`.
    fn reply_buffer(&self, n: usize) -> ReplyBuffer {
        ReplyBuffer::new(n)
    }

    fn __repr__(&self) -> String {
        format!("<ferry_worker context of request {}>", self.request_id)
    }
}
