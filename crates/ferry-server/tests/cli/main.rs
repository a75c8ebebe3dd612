//! The `ferry` command and the processes it runs: `ferry call`, `ferry bench`, the SDXL
//! schema shared with the Python worker, and workers dying with a killed host.

#[path = "../common/mod.rs"]
mod common;

mod bench_cli;
mod cli_call;
mod sdxl_schema;
mod worker_watchdog;
