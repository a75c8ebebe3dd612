//! ferry: a low-latency IPC engine for driving worker processes.
//!
//! A host spawns worker processes (often Python ML workers) and talks to them over a
//! transport chosen in configuration, all under one versioned protocol:
//!
//! - [`protocol`]: the envelope (request, response, event, error, cancel) and error codes;
//! - [`codec`]: envelope <-> bytes (JSON, MessagePack, bincode) with raw attachments;
//! - [`transport`]: the frame-moving contract and its implementations;
//! - [`worker`]: both ends of one worker connection: spawning and calling a worker from the
//!   host, and [`worker::serve`] for writing a worker in Rust.
//!
//! ```no_run
//! use ferry::worker::{WorkerProcess, WorkerSpec};
//! use serde_json::json;
//!
//! let spec = WorkerSpec::new("echo", "ferry", ["worker", "echo"]);
//! let mut worker = WorkerProcess::spawn(spec)?;
//! let reply = worker.call("echo", json!({"hello": "world"}), |_event| {})?;
//! assert_eq!(reply.data, json!({"hello": "world"}));
//! worker.shutdown()?;
//! # Ok::<(), ferry::worker::CallError>(())
//! ```

#![deny(missing_docs)]

pub mod codec;
pub mod connection;
pub mod pool;
pub mod protocol;
pub mod transport;
pub mod worker;
