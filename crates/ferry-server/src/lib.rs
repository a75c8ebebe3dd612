//! The ferry server: everything `ferry serve` adds over the engine.
//!
//! The engine ([`ferry`]) spawns and drives pools of worker processes. This crate puts a
//! service on top of it:
//!
//! - [`config`]: `ferry.toml`, validated into pool and orchestrator settings;
//! - [`state`]: the job state store (SQLite or PostgreSQL) with leases for several hosts;
//! - [`orchestrator`]: workflows, sessions and batches over the pools, with limits;
//! - [`api`]: the HTTP API and web console (`axum` over `hyper`);
//! - [`sdxl`]: the SDXL generation request's JSON Schema, validated on the host.
//!
//! The `ferry` binary (`src/bin/ferry`) is the command line over these and over the
//! benchmark harness ([`ferry_bench`]).

#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod orchestrator;
pub mod sdxl;
pub mod state;
