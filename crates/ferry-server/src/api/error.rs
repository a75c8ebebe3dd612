//! JSON errors with stable codes and their HTTP status.

use crate::orchestrator::OrchestratorError;
use crate::sdxl::RequestError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry::protocol::{ErrorBody, ErrorCode};
use serde_json::json;

/// An API error: `{"error": {"code", "message", "retryable"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retryable: bool,
}

impl ApiError {
    /// An error with an API-only code (`not_found`, `unauthorized`, ...).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retryable: false,
        }
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `400 invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// The same error, marked retryable (or not).
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// An error for a bare HTTP status (one answered without an API error, e.g. by a
    /// framework rejection), with the API code that status stands for.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::CONFLICT => "invalid_state",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            s if s.is_client_error() => "invalid_request",
            _ => "internal",
        };
        let retryable = matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
        );
        Self::new(status, code, message).retryable(retryable)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code (`invalid_request`, `not_found`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The HTTP status of a protocol error code.
    pub fn status_of(code: ErrorCode) -> StatusCode {
        match code {
            ErrorCode::InvalidRequest | ErrorCode::UnknownOperation => StatusCode::BAD_REQUEST,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Cancelled => StatusCode::CONFLICT,
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::WorkerCrashed | ErrorCode::Protocol | ErrorCode::VersionMismatch => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable | ErrorCode::StartupFailed => StatusCode::SERVICE_UNAVAILABLE,
            // `ErrorCode` is non-exhaustive: a code a newer engine adds is a 500 until it
            // is mapped here.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        ApiError {
            status: Self::status_of(body.code),
            code: body.code.as_str(),
            message: body.message,
            retryable: body.retryable,
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        match &e {
            OrchestratorError::NotFound(_) => ApiError::not_found(e.to_string()),
            OrchestratorError::InvalidState(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            }
            OrchestratorError::NotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_allowed", e.to_string())
            }
            OrchestratorError::LimitReached(_)
            | OrchestratorError::State(crate::state::StateError::LimitReached(_)) => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "limit_reached",
                message: e.to_string(),
                retryable: true,
            },
            OrchestratorError::State(s) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: s.code(),
                message: e.to_string(),
                retryable: true,
            },
            _ => e.to_body().into(),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match &e {
            RequestError::Invalid(_) => ApiError::invalid(e.to_string()),
            RequestError::Schema(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "retryable": self.retryable}});
        (self.status, Json(body)).into_response()
    }
}
