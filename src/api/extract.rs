//! A JSON body extractor whose failures are API errors (malformed, wrong types, too big).

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
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
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

fn reject(r: JsonRejection) -> ApiError {
    let status = r.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            "payload_too_large",
            "request body exceeds the server's limit",
        );
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
