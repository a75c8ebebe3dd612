//! Python workers from the Rust host: the echo worker over every transport, the pool with
//! Python workers, and the ML (SDXL) worker. They skip without a Python that has
//! `ferry_worker`, unless `FERRY_REQUIRE_PYTHON=1` (as `scripts/test` sets).

#[path = "../common/mod.rs"]
mod common;

mod ml_http;
mod ml_worker;
mod pool_python;
mod python_tls;
mod python_worker;
mod sdxl_http;
