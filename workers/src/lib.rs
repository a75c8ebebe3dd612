//! The native part of the `ferry_worker` Python package: pyo3 bindings over ferry's Rust
//! worker runtime.
//!
//! Python sees `ferry_worker._native` with [`connect`](serve::connect) (open the channel
//! the host set up), `Connection.serve` (run the runtime's loop with a Python dispatcher,
//! the GIL released while it waits) and `NativeContext` (the per-request context handed to
//! handlers). Everything else of the Python API is pure Python in `python/ferry_worker/`.

mod context;
mod convert;
mod error;
mod logging;
mod serve;

use pyo3::prelude::*;

/// The module `ferry_worker._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(serve::connect, m)?)?;
    m.add_function(wrap_pyfunction!(to_json_value, m)?)?;
    m.add_class::<serve::Connection>()?;
    m.add_class::<context::NativeContext>()?;
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
