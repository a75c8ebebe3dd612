//! The project's bare floors, looked up by the transport they are the floor of.
//!
//! A floor is the same kernel mechanism as a transport with no engine: fixed-size messages
//! echoed with no framing, parsing or envelope (see [`crate::floor`]). Every transport's
//! figure is divided by its floor's, measured in the same run. A transport with no floor
//! in this build reports `n/a`.

use super::{BenchError, RoundTrip};
use crate::floor::{PipeFloor, ShmFloor, SocketFloor, SocketKind};
use serde::Serialize;
use std::path::Path;

/// A bare ping-pong mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorKind {
    /// Two pipes (`ferry floor pipe-echo`): the floor of stdio.
    Pipe,
    /// A Unix domain socket (`ferry floor uds-echo`): the floor of `socket`.
    #[cfg(unix)]
    UnixSocket,
    /// TCP on loopback with `TCP_NODELAY` (`ferry floor tcp-echo`): the floor of `tcp`,
    /// of the HTTP baseline and of `serve`.
    Tcp,
    /// Two busy-polled rings in a shared segment, fixed-size messages, no frames, waiting
    /// strategy or liveness (`ferry floor shm-echo`): the floor of `shm`.
    ShmRing,
}

impl FloorKind {
    /// The floor of the transport named `transport` (`http` and `serve` included), if this build has
    /// one.
    ///
    /// ```
    /// use ferry_bench::FloorKind;
    /// assert_eq!(FloorKind::for_transport("stdio"), Some(FloorKind::Pipe));
    /// assert_eq!(FloorKind::for_transport("http"), Some(FloorKind::Tcp));
    /// assert_eq!(FloorKind::for_transport("carrier-pigeon"), None);
    /// ```
    pub fn for_transport(transport: &str) -> Option<FloorKind> {
        match transport {
            "stdio" => Some(FloorKind::Pipe),
            #[cfg(unix)]
            "socket" => Some(FloorKind::UnixSocket),
            "tcp" | "http" | "serve" => Some(FloorKind::Tcp),
            "shm" => Some(FloorKind::ShmRing),
            _ => None,
        }
    }

    /// Whether both ends of this floor busy-poll (the shm ring). On one CPU each end then
    /// waits out the other's timeslice, so its figure there is the scheduler's, not the
    /// mechanism's, and no ratio to it means anything.
    pub const fn busy_polls(self) -> bool {
        matches!(self, FloorKind::ShmRing)
    }

    /// The name in tables and the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            FloorKind::Pipe => "pipe",
            #[cfg(unix)]
            FloorKind::UnixSocket => "unix_socket",
            FloorKind::Tcp => "tcp",
            FloorKind::ShmRing => "shm_ring",
        }
    }

    /// Starts the bare peer (a child `ferry floor ...` of `ferry_exe`) for `size`-byte
    /// messages.
    pub fn spawn(self, ferry_exe: &Path, size: usize) -> Result<Box<dyn RoundTrip>, BenchError> {
        let exe = ferry_exe.display().to_string();
        let size_arg = size.to_string();
        Ok(match self {
            FloorKind::Pipe => Box::new(PipeFloor::spawn(
                &exe,
                &["floor", "pipe-echo", &size_arg],
                size,
            )?),
            #[cfg(unix)]
            FloorKind::UnixSocket => Box::new(SocketFloor::spawn(
                SocketKind::Unix,
                &exe,
                &["floor", "uds-echo", &size_arg],
                size,
            )?),
            FloorKind::Tcp => Box::new(SocketFloor::spawn(
                SocketKind::Tcp,
                &exe,
                &["floor", "tcp-echo", &size_arg],
                size,
            )?),
            FloorKind::ShmRing => Box::new(ShmFloor::spawn(
                &exe,
                &["floor", "shm-echo"],
                shm_ring_capacity(size),
            )?),
        })
    }
}

/// The data bytes of each ring of the shm floor for `payload`-byte messages, also given to
/// the engine's shm links in the same run: two messages and their length words fit with
/// room to spare (rounded up to a power of two by the ring), so neither side chunks them.
pub fn shm_ring_capacity(payload: usize) -> usize {
    payload.saturating_mul(2).saturating_add(64)
}
