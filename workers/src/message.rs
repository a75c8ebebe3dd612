//! What crosses the boundary between the serve loop and Python, as typed objects.
//!
//! The loop hands the Python dispatcher one [`Request`] (the envelope's fields, the
//! attachments and the request's context) and takes back a [`Reply`] or a
//! [`FerryError`]; [`read_answer`] turns that into the runtime's answer. Both classes are
//! also the public `ferry_worker.Request` and `ferry_worker.Reply`, so that a handler's
//! answer reaches the wire with no Python-side repacking.

use crate::buffers::{Attachment, FrameOwner, ReplyBuffer, Tracker};
use crate::context::NativeContext;
use crate::convert;
use crate::error::{ferry_error, FerryError};
use ferry::protocol::{Metrics, Priority};
use ferry::worker::{self, HandlerError, ReplyRef};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString};
use std::borrow::Cow;
use std::sync::Arc;

/// Every priority a request may carry, in the protocol's order: ferry's own list, so the
/// stub's `Priority` literal (which the tests compare with it) cannot miss one.
pub const PRIORITIES: [Priority; Priority::ALL.len()] = Priority::ALL;

/// One request, as the dispatcher and handlers see it.
///
/// Under a host the serve loop makes it; `Request(operation, data=None, attachments=(),
/// request_id="", deadline_ms=None, priority=None, context=None)` makes one in-process (for
/// tests, and for `Worker.handle`).
#[pyclass(name = "Request", module = "ferry_worker._native", frozen)]
pub struct Request {
    /// The operation name.
    #[pyo3(get)]
    operation: Py<PyString>,
    /// The request's JSON data as Python objects (`None` when absent).
    #[pyo3(get)]
    data: Py<PyAny>,
    /// The binary attachments, in order (a `list` of `bytes` under a host).
    #[pyo3(get)]
    attachments: Py<PyAny>,
    /// The request's id (the envelope's `message_id`).
    #[pyo3(get)]
    request_id: Py<PyString>,
    /// The deadline the host gave, in milliseconds from when it sent the request.
    #[pyo3(get)]
    deadline_ms: Option<u64>,
    priority: Option<Priority>,
    /// The request's context (progress, cancellation, deadline); `None` only for a request
    /// made in-process without one.
    #[pyo3(get)]
    context: Option<Py<PyAny>>,
}

impl Request {
    /// The request the serve loop hands Python, its context `ctx`.
    /// `operation` is the request's operation name as a Python string (the serve loop keeps
    /// one per registered name rather than decoding it per call).
    pub fn from_wire(
        py: Python<'_>,
        request: &worker::Request<'_>,
        operation: Py<PyString>,
        ctx: &Bound<'_, NativeContext>,
    ) -> PyResult<Request> {
        let env = request.envelope;
        let attachments = PyList::new(py, request.attachments.iter().map(|a| PyBytes::new(py, a)))?;
        Ok(Request {
            operation,
            data: convert::to_py(py, request.data())?.unbind(),
            attachments: attachments.into_any().unbind(),
            request_id: PyString::new(py, &env.message_id).unbind(),
            deadline_ms: env.deadline_ms,
            priority: env.priority,
            context: Some(ctx.clone().into_any().unbind()),
        })
    }
}

fn parse_priority(name: &str) -> PyResult<Priority> {
    PRIORITIES
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<_> = PRIORITIES
                .iter()
                .map(|p| format!("'{}'", p.as_str()))
                .collect();
            PyValueError::new_err(format!(
                "priority: expected {} or None, got {name:?}",
                known.join(", ")
            ))
        })
}

#[pymethods]
impl Request {
    #[new]
    #[pyo3(signature = (
        operation,
        data = None,
        attachments = None,
        request_id = None,
        deadline_ms = None,
        priority = None,
        context = None,
    ))]
    // One parameter per field: it is Python's keyword constructor.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        operation: Bound<'_, PyString>,
        data: Option<Py<PyAny>>,
        attachments: Option<Py<PyAny>>,
        request_id: Option<Bound<'_, PyString>>,
        deadline_ms: Option<u64>,
        priority: Option<&str>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        Ok(Request {
            operation: operation.unbind(),
            data: data.unwrap_or_else(|| py.None()),
            attachments: match attachments {
                Some(a) => a,
                None => PyList::empty(py).into_any().unbind(),
            },
            request_id: match request_id {
                Some(id) => id.unbind(),
                None => PyString::new(py, "").unbind(),
            },
            deadline_ms,
            priority: priority.map(parse_priority).transpose()?,
            context,
        })
    }

    /// `"high"`, `"normal"`, `"low"`, or `None` when the host set none.
    #[getter]
    fn priority(&self) -> Option<&'static str> {
        self.priority.map(Priority::as_str)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let deadline = match self.deadline_ms {
            Some(ms) => ms.to_string(),
            None => "None".into(),
        };
        let priority = match self.priority {
            Some(p) => format!("'{}'", p.as_str()),
            None => "None".into(),
        };
        Ok(format!(
            "Request({}, request_id={}, attachments={}, deadline_ms={deadline}, \
             priority={priority})",
            self.operation.bind(py).repr()?,
            self.request_id.bind(py).repr()?,
            count(self.attachments.bind(py).len().unwrap_or(0)),
        ))
    }
}

/// A handler's answer: JSON data, binary attachments, metrics.
///
/// `Reply(data=None, attachments=None, metrics=None)`; `attachments` is kept as a list
/// (the list given, or a new one holding the given sequence's items).
#[pyclass(name = "Reply", module = "ferry_worker._native", frozen)]
pub struct Reply {
    /// The response's JSON data.
    #[pyo3(get)]
    data: Py<PyAny>,
    /// Binary attachments: `bytes`, `bytearray`, `memoryview` or any byte buffer.
    #[pyo3(get)]
    attachments: Py<PyList>,
    /// `processing_time_ms` (filled in by the runtime when absent), `memory_usage_mb`,
    /// `gpu_utilization`; or `None`.
    #[pyo3(get)]
    metrics: Option<Py<PyAny>>,
}

impl Reply {
    /// The runtime's reply, converting as the wire needs; an `internal` error naming what
    /// cannot be sent.
    fn to_wire(&self, py: Python<'_>) -> Result<worker::Reply, HandlerError> {
        let data = convert::from_py(self.data.bind(py)).map_err(|e| {
            HandlerError::internal(format!("the handler's answer is not JSON: {e}"))
        })?;
        let attachments = self
            .attachments
            .bind(py)
            .iter()
            .map(|a| buffer_bytes(&a))
            .collect::<PyResult<Vec<_>>>()
            .map_err(|e| HandlerError::internal(format!("the handler's attachments: {e}")))?;
        let metrics = match &self.metrics {
            None => None,
            Some(m) => Some(
                read_metrics(m.bind(py))
                    .map_err(|e| HandlerError::internal(format!("the handler's metrics: {e}")))?,
            ),
        };
        Ok(worker::Reply {
            data,
            attachments,
            metrics,
        })
    }

    /// A Python reply holding what `reply` carries on the wire.
    fn from_wire(py: Python<'_>, reply: worker::Reply) -> PyResult<Reply> {
        let attachments = PyList::new(py, reply.attachments.iter().map(|a| PyBytes::new(py, a)))?;
        let metrics = match reply.metrics {
            None => None,
            Some(m) => {
                let value = serde_json::to_value(m)
                    .map_err(|e| PyValueError::new_err(format!("metrics: {e}")))?;
                Some(convert::to_py(py, &value)?.unbind())
            }
        };
        Ok(Reply {
            data: convert::to_py(py, &reply.data)?.unbind(),
            attachments: attachments.unbind(),
            metrics,
        })
    }
}

fn read_metrics(metrics: &Bound<'_, PyAny>) -> PyResult<Metrics> {
    let value = convert::from_py(metrics)?;
    serde_json::from_value::<Metrics>(value).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl Reply {
    #[new]
    #[pyo3(signature = (data = None, attachments = None, metrics = None))]
    fn new(
        py: Python<'_>,
        data: Option<Py<PyAny>>,
        attachments: Option<&Bound<'_, PyAny>>,
        metrics: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let attachments = match attachments {
            None => PyList::empty(py),
            Some(a) => match a.cast::<PyList>() {
                Ok(list) => list.clone(),
                Err(_) => {
                    // A lone buffer (or str) is iterable too: it would become a list of
                    // ints and fail only on the wire, far from the mistake.
                    if a.is_instance_of::<PyBytes>()
                        || a.is_instance_of::<PyByteArray>()
                        || a.is_instance_of::<PyMemoryView>()
                        || a.is_instance_of::<PyString>()
                    {
                        return Err(PyTypeError::new_err(format!(
                            "attachments must be a sequence of byte buffers (a list of bytes), \
                             not a single {}",
                            type_name(a)
                        )));
                    }
                    let items = a.try_iter()?.collect::<PyResult<Vec<_>>>()?;
                    PyList::new(py, items)?
                }
            },
        };
        Ok(Reply {
            data: data.unwrap_or_else(|| py.None()),
            attachments: attachments.unbind(),
            metrics,
        })
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let Ok(other) = other.cast::<Reply>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let metrics = |m: &Option<Py<PyAny>>| match m {
            Some(m) => m.bind(py).clone(),
            None => py.None().into_bound(py),
        };
        let equal = self.data.bind(py).eq(other.data.bind(py))?
            && self.attachments.bind(py).eq(other.attachments.bind(py))?
            && metrics(&self.metrics).eq(metrics(&other.metrics))?;
        Ok(pyo3::types::PyBool::new(py, equal)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let metrics = match &self.metrics {
            Some(m) => m.bind(py).repr()?.to_string(),
            None => "None".into(),
        };
        Ok(format!(
            "Reply({}, attachments={}, metrics={metrics})",
            self.data.bind(py).repr()?,
            count(self.attachments.bind(py).len()),
        ))
    }
}

/// The runtime's answer to a request from what the dispatcher gave back: a [`Reply`] is
/// sent, a [`FerryError`] answers with its code; anything else is a bug in the dispatcher,
/// answered `internal`.
pub fn read_answer(answer: &Bound<'_, PyAny>) -> Result<worker::Reply, HandlerError> {
    if let Ok(reply) = answer.cast::<Reply>() {
        return reply.get().to_wire(answer.py());
    }
    if let Ok(error) = answer.cast::<FerryError>() {
        return Err(FerryError::to_handler_error(error));
    }
    Err(HandlerError::internal(format!(
        "the dispatcher answered a {}, not a Reply or a FerryError",
        type_name(answer)
    )))
}

/// What the host receives for `answer` (a `Reply` or a `FerryError`), through the serve
/// loop's own conversion: a `Reply` of JSON data, `bytes` attachments and metrics, or the
/// `FerryError` raised (the one given, or an `internal` one for what cannot be sent).
/// `Worker.handle` uses it so that in-process calls answer exactly as served ones.
#[pyfunction]
pub fn wire_answer<'py>(
    py: Python<'py>,
    answer: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, Reply>> {
    match read_answer(answer) {
        Ok(reply) => Bound::new(py, Reply::from_wire(py, reply)?),
        Err(_) if answer.is_instance_of::<FerryError>() => Err(PyErr::from_value(answer.clone())),
        Err(e) => Err(ferry_error(py, e.code, e.message)),
    }
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
        PyTypeError::new_err(format!(
            "an attachment must be bytes, bytearray or a byte buffer (memoryview(x).cast('B')), \
             got {}: {e}",
            type_name(obj)
        ))
    })?;
    buffer.to_vec(obj.py())
}

/// How a `repr` shows attachments: their number, not their bytes (images, often).
fn count(attachments: usize) -> String {
    match attachments {
        1 => "<1 attachment>".into(),
        n => format!("<{n} attachments>"),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// One request as a raw handler sees it: the data as JSON bytes (no Python objects built
/// from it) and the attachments as read-only `memoryview`s over the receive buffer, valid
/// for the call only.
///
/// Under a host the serve loop makes it; `RawRequest(operation, data=b"null",
/// attachments=(), request_id="", deadline_ms=None, priority=None, context=None)` makes
/// one in-process (the attachments copied, revoked by [`RawRequest::revoke`]).
#[pyclass(name = "RawRequest", module = "ferry_worker._native", frozen)]
pub struct RawRequest {
    /// The operation name.
    #[pyo3(get)]
    operation: Py<PyString>,
    /// The request's data as compact JSON text (`b"null"` when absent).
    #[pyo3(get)]
    data: Py<PyBytes>,
    /// The attachments: a `list` of read-only `memoryview`s, released when the call ends.
    #[pyo3(get)]
    attachments: Py<PyList>,
    /// The request's id.
    #[pyo3(get)]
    request_id: Py<PyString>,
    /// The deadline the host gave, in milliseconds from when it sent the request.
    #[pyo3(get)]
    deadline_ms: Option<u64>,
    priority: Option<Priority>,
    /// The request's context; `None` only for a request made in-process without one.
    #[pyo3(get)]
    context: Option<Py<PyAny>>,
    /// What the views read: released and closed by `revoke`.
    lent: Vec<(Py<PyMemoryView>, Py<Attachment>)>,
    /// The receive buffer the attachments are in, when they were not copied.
    frame: Option<Arc<FrameOwner>>,
}

impl RawRequest {
    /// The raw request the serve loop hands Python: attachments lent from the receive
    /// buffer when `tracker` knows it holds them, else copied.
    pub fn from_wire(
        py: Python<'_>,
        request: &worker::Request<'_>,
        operation: Py<PyString>,
        ctx: &Bound<'_, NativeContext>,
        tracker: &Tracker,
    ) -> PyResult<RawRequest> {
        let env = request.envelope;
        // `null` (no data, as in most calls that carry attachments) needs no encoder.
        let data = match request.data() {
            serde_json::Value::Null => PyBytes::new(py, b"null"),
            value => PyBytes::new(
                py,
                &serde_json::to_vec(value)
                    .map_err(|e| PyValueError::new_err(format!("the request's data: {e}")))?,
            ),
        };
        let frame = if request.attachments.is_empty() {
            None
        } else {
            tracker.frame_of(request.attachments)
        };
        let attachments = request.attachments.iter().map(|a| match &frame {
            Some(frame) => Attachment::lent(a, frame.clone()),
            None => Attachment::copied(a),
        });
        let (list, lent) = lend(py, attachments)?;
        Ok(RawRequest {
            operation,
            data: data.unbind(),
            attachments: list,
            request_id: PyString::new(py, &env.message_id).unbind(),
            deadline_ms: env.deadline_ms,
            priority: env.priority,
            context: Some(ctx.clone().into_any().unbind()),
            lent,
            frame,
        })
    }

    /// Ends the loan: releases every view handed out (a kept one then raises `ValueError`)
    /// and closes the attachments to new exports. A buffer exported from them that is still
    /// alive keeps its memory: the frame is given to `tracker` to take over before reuse.
    pub fn revoke(&self, py: Python<'_>, tracker: &Tracker) {
        let mut kept = false;
        for (view, attachment) in &self.lent {
            // Fails (BufferError) when something exported from the view is alive: that
            // export then keeps the attachment's memory, checked below.
            let _ = view.bind(py).call_method0(pyo3::intern!(py, "release"));
            kept |= attachment.get().revoke();
        }
        if kept {
            if let Some(frame) = &self.frame {
                tracker.keep(frame.clone());
            }
        }
    }
}

/// Views over `attachments`, as a list for Python and as pairs kept for revocation.
type Lent = (Py<PyList>, Vec<(Py<PyMemoryView>, Py<Attachment>)>);

fn lend(py: Python<'_>, attachments: impl Iterator<Item = Attachment>) -> PyResult<Lent> {
    let mut lent = Vec::new();
    let list = PyList::empty(py);
    for attachment in attachments {
        let attachment = Bound::new(py, attachment)?;
        let view = PyMemoryView::from(attachment.as_any())?;
        list.append(&view)?;
        lent.push((view.unbind(), attachment.unbind()));
    }
    Ok((list.unbind(), lent))
}

#[pymethods]
impl RawRequest {
    #[new]
    #[pyo3(signature = (
        operation,
        data = None,
        attachments = None,
        request_id = None,
        deadline_ms = None,
        priority = None,
        context = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        operation: Bound<'_, PyString>,
        data: Option<&Bound<'_, PyAny>>,
        attachments: Option<&Bound<'_, PyAny>>,
        request_id: Option<Bound<'_, PyString>>,
        deadline_ms: Option<u64>,
        priority: Option<&str>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let data = match data {
            None => PyBytes::new(py, b"null"),
            Some(d) => PyBytes::new(py, &buffer_bytes(d)?),
        };
        let copies = match attachments {
            None => Vec::new(),
            Some(a) => a
                .try_iter()?
                .map(|item| buffer_bytes(&item?).map(|b| Attachment::copied(&b)))
                .collect::<PyResult<Vec<_>>>()?,
        };
        let (list, lent) = lend(py, copies.into_iter())?;
        Ok(RawRequest {
            operation: operation.unbind(),
            data: data.unbind(),
            attachments: list,
            request_id: match request_id {
                Some(id) => id.unbind(),
                None => PyString::new(py, "").unbind(),
            },
            deadline_ms,
            priority: priority.map(parse_priority).transpose()?,
            context,
            lent,
            frame: None,
        })
    }

    /// `"high"`, `"normal"`, `"low"`, or `None` when the host set none.
    #[getter]
    fn priority(&self) -> Option<&'static str> {
        self.priority.map(Priority::as_str)
    }

    /// Ends the call's loan of the attachments (the serve loop does it when the handler
    /// returns; `Worker.handle` too): views handed out are released.
    #[pyo3(name = "revoke")]
    fn py_revoke(&self, py: Python<'_>) {
        self.revoke(py, &Tracker::default());
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RawRequest({}, request_id={}, data=<{} bytes>, attachments={})",
            self.operation.bind(py).repr()?,
            self.request_id.bind(py).repr()?,
            self.data.bind(py).as_bytes().len(),
            count(self.lent.len()),
        ))
    }
}

/// The runtime's answer to a request whose attachments are `lent` (the receive buffer's):
/// like [`read_answer`], with attachments sent without copies where they can be: a
/// [`ReplyBuffer`] moves its bytes into the answer, a view into one of `lent` is sent from
/// the receive buffer (an echo).
pub fn read_answer_ref<'r>(
    answer: &Bound<'_, PyAny>,
    lent: &[&'r [u8]],
) -> Result<ReplyRef<'r>, HandlerError> {
    let Ok(reply) = answer.cast::<Reply>() else {
        return read_answer(answer).map(ReplyRef::from);
    };
    let py = answer.py();
    let reply = reply.get();
    let data = convert::from_py(reply.data.bind(py))
        .map_err(|e| HandlerError::internal(format!("the handler's answer is not JSON: {e}")))?;
    let attachments = reply
        .attachments
        .bind(py)
        .iter()
        .map(|a| attachment_ref(&a, lent))
        .collect::<PyResult<Vec<_>>>()
        .map_err(|e| HandlerError::internal(format!("the handler's attachments: {e}")))?;
    let metrics = match &reply.metrics {
        None => None,
        Some(m) => Some(
            read_metrics(m.bind(py))
                .map_err(|e| HandlerError::internal(format!("the handler's metrics: {e}")))?,
        ),
    };
    Ok(ReplyRef {
        data: Cow::Owned(data),
        attachments,
        metrics,
    })
}

/// One answer attachment: moved out of a [`ReplyBuffer`], borrowed when it views `lent`
/// bytes, copied otherwise.
fn attachment_ref<'r>(obj: &Bound<'_, PyAny>, lent: &[&'r [u8]]) -> PyResult<Cow<'r, [u8]>> {
    if let Ok(buffer) = obj.cast::<ReplyBuffer>() {
        return buffer
            .get()
            .take()
            .map(Cow::Owned)
            .map_err(PyValueError::new_err);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Owned(b.as_bytes().to_vec()));
    }
    if !lent.is_empty() && obj.is_instance_of::<PyMemoryView>() {
        if let Ok(buffer) = pyo3::buffer::PyBuffer::<u8>::get(obj) {
            if buffer.is_c_contiguous() {
                let start = buffer.buf_ptr() as usize;
                let len = buffer.len_bytes();
                for bytes in lent {
                    let base = bytes.as_ptr() as usize;
                    let fits = start >= base
                        && (start - base)
                            .checked_add(len)
                            .is_some_and(|end| end <= bytes.len());
                    if fits {
                        let offset = start - base;
                        return Ok(Cow::Borrowed(&bytes[offset..offset + len]));
                    }
                }
            }
        }
    }
    buffer_bytes(obj).map(Cow::Owned)
}
