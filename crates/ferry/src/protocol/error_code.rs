//! The closed set of error codes carried in `error.code`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Every error a worker or the host can report, as a stable snake_case code.
///
/// The set is closed: a peer that sends a code this build does not know is read as
/// [`ErrorCode::Internal`] (its message is kept), so a newer worker never breaks an older host.
///
/// ```
/// use ferry::protocol::ErrorCode;
/// assert_eq!(ErrorCode::Overloaded.as_str(), "overloaded");
/// assert!(ErrorCode::Overloaded.is_retryable());
/// assert!(!ErrorCode::InvalidRequest.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request's data failed validation; sending it again will fail again.
    InvalidRequest,
    /// The worker does not serve this operation.
    UnknownOperation,
    /// The request's deadline passed before an answer arrived.
    Timeout,
    /// The request was cancelled by its caller.
    Cancelled,
    /// No capacity: a full queue or a worker at its in-flight limit.
    Overloaded,
    /// The worker process died (or its link broke) while the request was in flight.
    WorkerCrashed,
    /// A frame exceeded the configured maximum size.
    FrameTooLarge,
    /// A peer broke the protocol: undecodable frame, unexpected message, bad handshake.
    Protocol,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// No worker can take the request now (circuit breaker open, pool stopping).
    Unavailable,
    /// The worker failed to start or to send `ready` in time.
    StartupFailed,
    /// Anything else: a handler's unexpected exception, a host-side bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownOperation,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Overloaded,
        ErrorCode::WorkerCrashed,
        ErrorCode::FrameTooLarge,
        ErrorCode::Protocol,
        ErrorCode::VersionMismatch,
        ErrorCode::Unavailable,
        ErrorCode::StartupFailed,
        ErrorCode::Internal,
    ];

    /// The wire form of the code.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownOperation => "unknown_operation",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::WorkerCrashed => "worker_crashed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Protocol => "protocol",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StartupFailed => "startup_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether sending the same request again may succeed. Retries happen only for these
    /// codes, and only for operations marked idempotent.
    pub const fn is_retryable(self) -> bool {
        match self {
            ErrorCode::Timeout
            | ErrorCode::Overloaded
            | ErrorCode::WorkerCrashed
            | ErrorCode::Unavailable
            | ErrorCode::StartupFailed => true,
            ErrorCode::InvalidRequest
            | ErrorCode::UnknownOperation
            | ErrorCode::Cancelled
            | ErrorCode::FrameTooLarge
            | ErrorCode::Protocol
            | ErrorCode::VersionMismatch
            | ErrorCode::Internal => false,
        }
    }

    /// Parses a wire code; unknown codes are `None`.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(d)?;
        // Why lenient: the set is closed for this build, but a newer worker may know more
        // codes; reading them as `internal` keeps the message and the connection.
        Ok(ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn unknown_code_from_a_newer_peer_reads_as_internal() {
        let code: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(code, ErrorCode::Internal);
    }
}
