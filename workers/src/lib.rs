//! The native part of the `ferry_worker` Python package: pyo3 bindings over ferry's Rust
//! worker runtime.
//!
//! Python sees `ferry_worker._native` with `connect` (open the channel the host set up),
//! `Connection.serve` (run the runtime's loop with a Python dispatcher, the GIL released
//! while it waits), the typed boundary of that loop (`Request` in, `Reply` or `FerryError`
//! out, see the `message` module), `NativeContext` (the per-request context handed to
//! handlers) and the closed sets the protocol defines (`ERROR_CODES`, `PRIORITIES`), read
//! from the Rust enums so that Python holds no copy of them. The rest of the Python API is
//! pure Python in `python/ferry_worker/`.

mod buffers;
mod context;
mod convert;
mod error;
mod logging;
mod message;
mod serve;

use ferry::protocol::ErrorCode;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The module `ferry_worker._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(serve::connect, m)?)?;
    m.add_function(wrap_pyfunction!(to_json_value, m)?)?;
    m.add_function(wrap_pyfunction!(error_code, m)?)?;
    m.add_function(wrap_pyfunction!(message::wire_answer, m)?)?;
    m.add_class::<serve::Connection>()?;
    m.add_class::<context::NativeContext>()?;
    m.add_class::<message::Request>()?;
    m.add_class::<message::Reply>()?;
    m.add_class::<message::RawRequest>()?;
    m.add_class::<buffers::Attachment>()?;
    m.add_class::<buffers::ReplyBuffer>()?;
    m.add_class::<error::FerryError>()?;
    m.add("InvalidRequest", error::invalid_request_type(py)?)?;
    m.add("Cancelled", error::cancelled_type(py)?)?;
    m.add(
        "ERROR_CODES",
        PyTuple::new(py, ErrorCode::ALL.iter().map(|c| c.as_str()))?,
    )?;
    m.add(
        "PRIORITIES",
        PyTuple::new(py, message::PRIORITIES.iter().map(|p| p.as_str()))?,
    )?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "RUST_RUNTIME",
        concat!("ferry-rust/", env!("CARGO_PKG_VERSION")),
    )?;
    m.add("PROTOCOL_VERSION", ferry::protocol::PROTOCOL_VERSION)?;
    m.add(
        "TRANSPORTS",
        ferry::transport::TransportKind::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

/// Round-trips `value` through the runtime's JSON conversion: what a handler's answer
/// becomes on the wire (raises `TypeError`/`ValueError` for what cannot).
#[pyfunction]
fn to_json_value<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    convert::to_py(py, &convert::from_py(value)?)
}

/// `code` as the host reads it: itself when it is one of `ERROR_CODES`, else `"internal"`.
#[pyfunction]
fn error_code(code: &str) -> &'static str {
    error::parse_code(code).as_str()
}
