//! What crosses the boundary between the serve loop and Python, as typed objects.
//!
//! The loop hands the Python dispatcher one [`Request`] (the envelope's fields, the
//! attachments and the request's context) and takes back a [`Reply`] or a
//! [`FerryError`]; [`read_answer`] turns that into the runtime's answer. Both classes are
//! also the public `ferry_worker.Request` and `ferry_worker.Reply`, so that a handler's
//! answer reaches the wire with no Python-side repacking.

use crate::context::NativeContext;
use crate::convert;
use crate::error::{ferry_error, FerryError};
use ferry::protocol::{Metrics, Priority};
use ferry::worker::{self, HandlerError};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString};

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
    pub fn from_wire(
        py: Python<'_>,
        request: &worker::Request<'_>,
        ctx: &Bound<'_, NativeContext>,
    ) -> PyResult<Request> {
        let env = request.envelope;
        let attachments = PyList::new(py, request.attachments.iter().map(|a| PyBytes::new(py, a)))?;
        Ok(Request {
            operation: PyString::new(py, request.operation()).unbind(),
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
