//! Both ends of one worker connection.
//!
//! - Host side: [`WorkerProcess`] spawns a worker from a [`WorkerSpec`] with its transport
//!   wired, waits for its `ready` event, calls it, and stops it.
//! - Worker side: [`serve`] runs a [`Handler`] in a worker process, reading the transport
//!   from the environment the host set (see [`env`](mod@env)).

mod call_error;
pub mod echo;
pub mod env;
mod handler;
mod host;
mod runtime;
mod spec;
mod stderr_log;
pub mod watchdog;

pub use call_error::CallError;
pub use handler::{Context, Handler, HandlerError, Reply, ReplyRef, Request};
pub use host::{CallOptions, Response, WorkerHooks, WorkerProcess};
pub use runtime::{serve, serve_link, ServeError};
pub use spec::{Dialect, WorkerSpec};
pub use stderr_log::ExitHook;
