//! The durable job state store (`[state]`): a `ferry serve` killed with SIGKILL and
//! started again on the same SQLite file finishes its batches and sessions; two hosts on
//! one PostgreSQL database share a batch and survive one of them being killed; and the
//! store's claims, fencing and pruning through its public API.

#[path = "../common/mod.rs"]
mod common;

mod postgres;
mod restart;
mod store;
mod support;
