//! Failures of the native layer, raised in Python as `ferry_worker.FerryError`.

use ferry::codec::CodecError;
use ferry::protocol::ErrorCode;
use ferry::transport::TransportError;
use ferry::worker::env::EnvError;
use ferry::worker::ServeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

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

/// A `ferry_worker.errors.FerryError` with `message` and `code`; a `RuntimeError` if the
/// Python package cannot be imported.
pub fn ferry_error(py: Python<'_>, code: ErrorCode, message: String) -> PyErr {
    static FERRY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match FERRY_ERROR.import(py, "ferry_worker.errors", "FerryError") {
        Ok(class) => match class.call1((message.clone(), code.as_str())) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(format!("{code}: {message}")),
    }
}

/// `ferry_worker.errors.Cancelled`, raised by `check_cancelled`.
pub fn cancelled_error(py: Python<'_>) -> PyErr {
    static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match CANCELLED.import(py, "ferry_worker.errors", "Cancelled") {
        Ok(class) => match class.call1(("cancelled",)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    }
}
