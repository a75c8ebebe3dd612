//! The exceptions of the Python API, defined here so that they carry a real
//! [`ErrorCode`], and the failures of the native layer, raised as them.
//!
//! `FerryError` is a pyclass over `Exception` holding the code as the Rust enum: the serve
//! loop reads a handler's error from its fields, never by parsing strings, and the set of
//! codes Python can see is `ErrorCode::ALL` (exported as `ERROR_CODES`), with no copy kept
//! in Python. `InvalidRequest` and `Cancelled` are its subclasses, made at module set-up by
//! calling `type` (see [`subclass`]).

use ferry::codec::CodecError;
use ferry::protocol::ErrorCode;
use ferry::transport::TransportError;
use ferry::worker::env::EnvError;
use ferry::worker::{HandlerError, ServeError};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::PyTypeInfo;

/// The module every class of the native layer reports (pickling finds them there).
const MODULE: &str = "ferry_worker._native";

/// An error with a protocol error code; raised from a handler, it answers with that code.
///
/// `FerryError(message="", code=None)`: without `code`, the class's `default_code`
/// (`"internal"` here; subclasses set their own). A code outside the closed set is read
/// as `internal`, as the host reads an unknown code; the message is kept.
#[pyclass(
    name = "FerryError",
    module = "ferry_worker._native",
    extends = PyException,
    subclass
)]
pub struct FerryError {
    code: ErrorCode,
    message: String,
}

impl FerryError {
    /// The protocol error `error` answers a request with. An empty message is answered as
    /// the code itself, so that the host never shows a blank error.
    pub fn to_handler_error(error: &Bound<'_, FerryError>) -> HandlerError {
        // Only a thread still inside this exception's `__init__` holds it mutably; that is
        // a bug of the program, answered rather than a panic.
        let Ok(this) = error.try_borrow() else {
            return HandlerError::internal("a FerryError was answered while being initialised");
        };
        let message = if this.message.is_empty() {
            this.code.as_str().to_owned()
        } else {
            this.message.clone()
        };
        HandlerError::new(this.code, message)
    }
}

/// `code` as a member of the closed set; an unknown code reads as `internal`.
pub fn parse_code(code: &str) -> ErrorCode {
    ErrorCode::parse(code).unwrap_or(ErrorCode::Internal)
}

/// The `default_code` class attribute of `cls` (set by each subclass).
fn default_code(cls: &Bound<'_, PyType>) -> PyResult<ErrorCode> {
    let code = cls.getattr("default_code")?;
    let code = code.cast::<PyString>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "{}.default_code must be a str (one of ERROR_CODES)",
            cls.name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    Ok(parse_code(code.to_str()?))
}

#[pymethods]
impl FerryError {
    /// The code of an instance made without one.
    #[classattr]
    fn default_code() -> &'static str {
        ErrorCode::Internal.as_str()
    }

    /// Takes any arguments, because the fields are set by `__init__`: a subclass may define
    /// its own `__init__` with other parameters, as it could with a Python exception, and
    /// call `super().__init__(message, code)`.
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Ok(FerryError {
            code: default_code(cls)?,
            message: String::new(),
        })
    }

    #[pyo3(signature = (message = String::new(), code = None))]
    fn __init__(slf: &Bound<'_, Self>, message: String, code: Option<&str>) -> PyResult<()> {
        let code = match code {
            Some(code) => parse_code(code),
            None => default_code(&slf.get_type())?,
        };
        // `BaseException.__init__` refuses keyword arguments, so it is not called; `args`
        // is set as it would have set it, for `str(exc)` and tracebacks.
        slf.setattr("args", (message.as_str(),))?;
        let mut this = slf.borrow_mut();
        this.code = code;
        this.message = message;
        Ok(())
    }

    /// The protocol error code (one of `ERROR_CODES`).
    #[getter]
    fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The message, as given.
    #[getter]
    fn message(&self) -> String {
        self.message.clone()
    }

    /// Whether the host may retry a request answered with this code (for idempotent
    /// operations only).
    #[getter]
    fn retryable(&self) -> bool {
        self.code.is_retryable()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.borrow();
        Ok(format!(
            "{}({}, code='{}')",
            slf.get_type().name()?,
            PyString::new(slf.py(), &this.message).repr()?,
            this.code.as_str()
        ))
    }

    /// Pickles as `cls(message, code)` plus the instance's attributes: `args` alone (what
    /// `BaseException` pickles) would lose the code.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let (message, code) = {
            let this = slf.borrow();
            (this.message.clone(), this.code.as_str())
        };
        let state = match slf.getattr("__dict__") {
            Ok(dict) if dict.is_truthy()? => dict,
            _ => py.None().into_bound(py),
        };
        PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                (message, code).into_pyobject(py)?.into_any(),
                state,
            ],
        )
    }
}

/// A subclass of `FerryError` with `default_code`, made by calling `type` as a `class`
/// statement would. `InvalidRequest` must also be a `ValueError` (code that catches
/// `ValueError` around input parsing keeps working), and a pyclass has a single base; both
/// subclasses are made this way so that they behave alike.
fn subclass<'py>(
    py: Python<'py>,
    name: &str,
    extra_base: Option<Bound<'py, PyType>>,
    code: ErrorCode,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let mut bases = vec![FerryError::type_object(py)];
    bases.extend(extra_base);
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", MODULE)?;
    namespace.set_item("__qualname__", name)?;
    namespace.set_item("__doc__", doc)?;
    namespace.set_item("default_code", code.as_str())?;
    let class = PyType::type_object(py).call1((name, PyTuple::new(py, bases)?, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

/// `ferry_worker.InvalidRequest`: `FerryError` and `ValueError`, code `invalid_request`.
pub fn invalid_request_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS
        .get_or_try_init(py, || {
            subclass(
                py,
                "InvalidRequest",
                Some(PyValueError::type_object(py)),
                ErrorCode::InvalidRequest,
                "The request's data is invalid: answered `invalid_request` (never retried).",
            )
        })
        .map(|class| class.bind(py))
}

/// `ferry_worker.Cancelled`: code `cancelled`, raised by `ctx.check_cancelled()`.
pub fn cancelled_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS
        .get_or_try_init(py, || {
            subclass(
                py,
                "Cancelled",
                None,
                ErrorCode::Cancelled,
                "The request was cancelled or its deadline passed: answered `cancelled`.\n\n\
                 Raised by `ctx.check_cancelled()`.",
            )
        })
        .map(|class| class.bind(py))
}

/// A `FerryError` with `code` and `message`, as a Python exception.
pub fn ferry_error(py: Python<'_>, code: ErrorCode, message: String) -> PyErr {
    match FerryError::type_object(py).call1((message, code.as_str())) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// A `Cancelled`, raised by `check_cancelled`.
pub fn cancelled_error(py: Python<'_>) -> PyErr {
    match cancelled_type(py).and_then(|class| class.call1(("cancelled",))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// Why connecting to the host or serving it failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The `FERRY_*` environment the host sets is missing or wrong.
    #[error("worker environment: {0}")]
    Env(#[from] EnvError),
    /// The transport could not be opened.
    #[error("cannot reach the host: {0}")]
    Transport(#[from] TransportError),
    /// The codec does not fit the transport.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The serve loop failed other than by the host going away.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// `serve` was called a second time on one connection.
    #[error("this connection has already been served; a worker serves once")]
    AlreadyServed,
}

impl NativeError {
    /// The protocol error code this failure is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            NativeError::Env(_) => ErrorCode::StartupFailed,
            NativeError::Transport(e) => e.code(),
            NativeError::Codec(_) => ErrorCode::Protocol,
            NativeError::Serve(e) => e.code(),
            NativeError::AlreadyServed => ErrorCode::Internal,
        }
    }
}

impl From<NativeError> for PyErr {
    fn from(e: NativeError) -> PyErr {
        Python::attach(|py| ferry_error(py, e.code(), e.to_string()))
    }
}
