//! The HTTP API, console, hardening, load and policies against a real `ferry serve` on
//! loopback with real worker processes.

#[path = "../common/mod.rs"]
mod common;

mod http_api;
mod http_console;
mod http_hardening;
mod http_inputs;
mod http_load;
mod http_policy;
mod http_state;
mod http_tls;
