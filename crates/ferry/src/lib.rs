//! ferry: a low-latency IPC engine for driving worker processes.
//!
//! A host spawns worker processes (often Python ML workers) and talks to them over a
//! transport chosen in configuration, all under one versioned protocol:
//!
//! - [`protocol`]: the envelope (request, response, event, error, cancel), error codes,
//!   typed events;
//! - [`codec`]: envelope <-> bytes (JSON, MessagePack, bincode) with raw attachments;
//! - [`transport`]: the frame-moving contract and its implementations;
//! - [`connection`]: many requests in flight over one link;
//! - [`worker`]: both ends of one worker connection: spawning and calling a worker from the
//!   host, and [`worker::serve`] for writing a worker in Rust;
//! - [`pool`]: a supervised pool of workers of one type.
//!
//! [`prelude`] gathers what an embedding host needs. A pool of two Python workers over
//! shared memory (`docs/embedding.md` walks through it, and through a Rust worker, an async
//! host, errors and events):
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
//! assert_eq!(reply.data, json!({"hello": "world"}));
//! pool.shutdown();
//! # Ok::<(), PoolError>(())
//! ```

#![deny(missing_docs)]

pub mod codec;
pub mod connection;
#[cfg(test)]
mod embedding_doc;
pub mod pool;
pub mod prelude;
pub mod protocol;
pub mod transport;
pub mod worker;
