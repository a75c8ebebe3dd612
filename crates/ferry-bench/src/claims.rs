//! The old design's latency claims, which every transport's p50 is held against.
//!
//! The design being replaced (a C# orchestrator reaching Python workers) claimed these
//! round-trip latencies per mechanism: an HTTP bridge ~200 µs, stdio ~10 µs, a named pipe
//! (here: the Unix socket) ~5 µs, shared memory ~1 µs. It made no claim for TCP.

/// The claimed round-trip latency in microseconds for a transport, by its name.
///
/// ```
/// assert_eq!(ferry_bench::claim_us("stdio"), Some(10.0));
/// assert_eq!(ferry_bench::claim_us("tcp"), None);
/// ```
pub fn claim_us(transport: &str) -> Option<f64> {
    match transport {
        "http" => Some(200.0),
        "stdio" => Some(10.0),
        "socket" => Some(5.0),
        "shm" => Some(1.0),
        _ => None,
    }
}

/// Whether a measured p50 meets the claim for `transport` (`None`: no claim).
pub fn claim_met(transport: &str, p50_us: f64) -> Option<bool> {
    claim_us(transport).map(|claim| p50_us <= claim)
}
