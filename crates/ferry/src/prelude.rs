//! What an embedding host (or a Rust worker) needs, in one import: `use ferry::prelude::*;`.
//!
//! - Host side: [`WorkerSpec`] and its builder methods, [`Pool`] and [`PoolConfig`], a
//!   [`Call`] to send, its [`Response`] and [`Event`]s ([`Progress`]); a lone
//!   [`WorkerProcess`] without a pool.
//! - Worker side: [`serve`] a [`handler_fn`] closure (or any [`Handler`]), answering with
//!   a [`Reply`] or a [`HandlerError`], reporting progress through the [`Context`].
//! - Errors: [`SpawnError`] (a worker could not start), [`CallError`] (a call failed),
//!   [`PoolError`] (either, through a pool, or the pool's own refusals); each has
//!   `.code()`, an [`ErrorCode`].
//! - Settings: [`TransportKind`], [`ShmOptions`], [`CodecKind`], [`Dialect`],
//!   [`Priority`].
//!
//! ```no_run
//! use ferry::prelude::*;
//! use serde_json::json;
//!
//! let spec = WorkerSpec::new("echo", ".venv/bin/python", ["-m", "ferry_worker.echo"])
//!     .shm(ShmOptions::default())
//!     .codec(CodecKind::MsgPack);
//! let pool = Pool::start(spec, PoolConfig::default().workers(2, 2))?;
//! let reply = pool.send(Call::new("echo").data(json!({"hello": "world"})))?;
//! println!("{}", reply.data);
//! pool.shutdown();
//! # Ok::<(), PoolError>(())
//! ```

pub use crate::codec::CodecKind;
pub use crate::pool::{Pool, PoolConfig, PoolError};
pub use crate::protocol::{Dialect, ErrorCode, Event, Priority, Progress};
pub use crate::transport::shm::ShmOptions;
pub use crate::transport::TransportKind;
pub use crate::worker::{
    handler_fn, serve, Call, CallError, CallOptions, Context, Handler, HandlerError, Reply,
    Request, Response, ResponseRef, SpawnError, WorkerProcess, WorkerSpec,
};
