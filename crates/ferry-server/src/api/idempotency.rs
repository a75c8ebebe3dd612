//! `Idempotency-Key` on POST routes: a retried request with the same key gets the first
//! answer instead of running twice (a batch created twice, an image generated twice).
//!
//! The key is reserved in the state store before the request runs, so a retry on
//! another host sharing the database gets the same answer. A retry while the first
//! request still runs gets `409 idempotency_in_progress`; the same key with a different
//! method, path or body gets `422 idempotency_key_reused`. Answers the server gives
//! without having done anything (`429`, `5xx`) are not kept: the key is freed, so a retry
//! runs. Streamed answers (`text/event-stream`) are not kept either.

use super::{error::ApiError, AppState};
use crate::state::{IdempotencyBegin, StoredAnswer};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The header.
pub const HEADER: &str = "idempotency-key";
/// The header on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Largest answer kept for a replay (larger ones free the key).
const MAX_KEPT_ANSWER: usize = 64 << 20;

/// The middleware.
pub(crate) async fn apply(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_owned()
        }
        _ => {
            return ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
            .into_response()
        }
    };
    let (parts, body) = req.into_parts();
    // Read here, before any extractor could apply `server.body_limit_bytes`: so here too
    // (a chunked body declares no length for the limits layer to refuse).
    let bytes = match axum::body::to_bytes(body, st.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body over {} bytes (server.body_limit_bytes)",
                    st.body_limit
                ),
            )
            .into_response()
        }
    };
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str().as_bytes());
    hash.update([0]);
    hash.update(parts.uri.path().as_bytes());
    hash.update([0]);
    hash.update(&bytes);
    let fingerprint: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let store = st.orch.store();
    match store.idempotency_begin(&key, &fingerprint).await {
        Err(e) => {
            return ApiError::from(crate::orchestrator::OrchestratorError::from(e)).into_response()
        }
        Ok(IdempotencyBegin::InProgress) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running; retry later",
            )
            .into_response()
        }
        Ok(IdempotencyBegin::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request (method, path or body)",
            )
            .into_response()
        }
        Ok(IdempotencyBegin::Done(answer)) => return replay(answer),
        Ok(IdempotencyBegin::Run) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let keep = !status.is_server_error()
        && status != StatusCode::TOO_MANY_REQUESTS
        && !content_type.starts_with("text/event-stream");
    if !keep {
        free(&st, &key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_KEPT_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            free(&st, &key).await;
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the answer could not be kept for Idempotency-Key: {e}"),
            )
            .into_response();
        }
    };
    let answer = StoredAnswer {
        status: status.as_u16(),
        content_type,
        body: bytes.to_vec(),
    };
    if let Err(e) = store.idempotency_finish(&key, &answer).await {
        tracing::error!(error = %e, "cannot keep the answer for an Idempotency-Key");
        free(&st, &key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn free(st: &AppState, key: &str) {
    if let Err(e) = st.orch.store().idempotency_abort(key).await {
        tracing::error!(error = %e, "cannot free an Idempotency-Key");
    }
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&answer.content_type) {
        headers.insert(axum::http::header::CONTENT_TYPE, v);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
