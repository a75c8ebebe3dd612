//! The one operation every benchmark times: a round trip of a payload to a peer.

use super::BenchError;
use crate::floor::{PipeFloor, ShmFloor, SocketFloor};

/// Something that echoes payloads: a bare floor peer, an engine worker, the HTTP baseline.
///
/// `round_trip` writes the whole payload to the peer and returns once the whole echo has
/// been read back (and its length checked); the criterion benches and `ferry bench` time
/// exactly this call.
pub trait RoundTrip {
    /// One round trip of `payload` (its length must be the one the peer was started for).
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError>;
}

impl RoundTrip for PipeFloor {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        Ok(PipeFloor::round_trip(self, payload)?)
    }
}

impl RoundTrip for ShmFloor {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        Ok(ShmFloor::round_trip(self, payload)?)
    }
}

impl RoundTrip for SocketFloor {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        Ok(SocketFloor::round_trip(self, payload)?)
    }
}

impl<T: RoundTrip + ?Sized> RoundTrip for Box<T> {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        (**self).round_trip(payload)
    }
}

/// A payload of `size` bytes: printable ASCII (so it travels unescaped in JSON), not all
/// one byte (so a peer that echoes the wrong bytes is caught by the first-call check).
///
/// ```
/// let p = ferry_bench::payload(64);
/// assert_eq!(p.len(), 64);
/// assert!(p.is_ascii());
/// ```
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}
