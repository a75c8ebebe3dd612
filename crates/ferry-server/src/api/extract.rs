//! Extractors whose failures are API errors: a JSON body (malformed, wrong types, too
//! big, too slow) and path parameters (malformed, invalid UTF-8).

use super::error::ApiError;
use super::limits::BodyTimeout;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// `Json<T>` with ferry's error format.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(reject_json(rejection)),
        }
    }
}

/// `axum::extract::Path<T>` with ferry's error format: a parameter that cannot be
/// decoded (invalid percent-encoding or UTF-8) or parsed is `400 invalid_request`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) if r.status().is_client_error() => Err(ApiError::invalid(r.body_text())),
            Err(r) => Err(ApiError::from_status(r.status(), r.body_text())),
        }
    }
}

/// Whether `error` or one of its sources is the body deadline passing.
pub(super) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// `413 payload_too_large`: the body passed `server.body_limit_bytes`.
pub(super) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body exceeds the server's limit",
    )
}

/// A JSON body's rejection as an API error.
pub(super) fn reject_json(r: JsonRejection) -> ApiError {
    if is_body_timeout(&r) {
        return ApiError::from_status(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        );
    }
    let status = r.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    let message = match &r {
        JsonRejection::JsonDataError(_) => format!("wrong types: {}", r.body_text()),
        JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", r.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            "expected `Content-Type: application/json`".to_owned()
        }
        _ => r.body_text(),
    };
    let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_media_type"
    } else {
        "invalid_request"
    };
    ApiError::new(
        if code == "invalid_request" {
            StatusCode::BAD_REQUEST
        } else {
            status
        },
        code,
        message,
    )
}
