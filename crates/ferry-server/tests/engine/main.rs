//! The engine against real processes and links: codecs, the connection, shm, socket
//! faults, workers over each transport, and the pool. (The transport contract is
//! checked in the engine crate: `crates/ferry/tests/conformance.rs`.)
//!
//! One test binary (the modules share `tests/common`); run one module with
//! `cargo test -p ferry-server --test engine pool::`.

#[path = "../common/mod.rs"]
mod common;

mod codec;
mod connection;
mod pool;
mod shm;
mod shm_process;
mod socket_faults;
mod unreadable_answers;
mod worker_bad_input;
mod worker_socket;
mod worker_stdio;
mod worker_stdio_binary;
mod worker_tls;
