//! Both ends of one worker connection.
//!
//! - Host side: [`WorkerProcess`] spawns a worker from a [`WorkerSpec`] with its transport
//!   wired, waits for its `ready` event, calls it, and stops it.
//! - Worker side: [`serve`] runs a [`Handler`] in a worker process, reading the transport
//!   from the environment the host set (see [`env`](mod@env)).

pub mod echo;
pub mod env;
#[cfg(test)]
mod frame_header_tests;
mod handler;
mod handler_fn;
mod host;
mod runtime;
mod spec;
mod stderr_log;
#[cfg(test)]
mod stdio_framing_tests;
pub mod watchdog;

/// Defined by the connection layer (a call, its outcome, a failed start), re-exported where
/// callers meet them.
pub use crate::connection::{Call, CallError, Response, ResponseRef, SpawnError};
/// Defined by the protocol (the wire format), re-exported beside [`WorkerSpec`].
pub use crate::protocol::Dialect;
pub use handler::{Context, Handler, HandlerError, Reply, ReplyRef, Request};
pub use handler_fn::{handler_fn, HandlerFn};
pub use host::{CallOptions, WorkerHooks, WorkerProcess};
pub use runtime::{serve, serve_link, ServeError};
pub use spec::WorkerSpec;
pub use stderr_log::ExitHook;
