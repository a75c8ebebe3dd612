//! The HTTP API (axum) over the orchestrator.
//!
//! Handlers are thin: parse, call the orchestrator, map the result. Every error answer is
//! `{"error": {"code", "message", "retryable"}}` with a stable code (see `docs/api.md`).
//! `/api/*` and `/metrics` require `Authorization: Bearer TOKEN` when a token is
//! configured (`/metrics` not when `server.public_metrics` is set); `/health` never does.
//! [`serve`] runs the router with the server's connection cap and timeouts.

mod cancel;
mod console;
mod error;
mod events;
mod extract;
mod handlers;
mod idempotency;
mod inputs;
mod limits;
mod relay;
mod sdxl_routes;
mod server;

pub use console::{with_console, ConsoleOptions};
pub use error::ApiError;
pub use limits::{BodyTimeout, MAX_HEADERS};
pub use server::serve;

use crate::config::ServerConfig;
use crate::orchestrator::Orchestrator;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    orch: Arc<Orchestrator>,
    token: Option<Arc<str>>,
    /// Shared, not a `String`: the state is cloned for every middleware and handler of
    /// every request.
    sdxl_worker_type: Arc<str>,
    /// Inference requests in progress, by `request_id`.
    live: Arc<cancel::LiveRequests>,
    /// `server.body_limit_bytes`: what a middleware that reads a body may read.
    body_limit: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// The router for `orch` under `server`'s settings.
pub fn router(orch: Arc<Orchestrator>, server: &ServerConfig) -> Router {
    use handlers as h;
    let state = AppState {
        orch,
        token: server.effective_token().map(Arc::from),
        sdxl_worker_type: Arc::from(server.sdxl_worker_type.as_str()),
        live: Arc::default(),
        body_limit: server.body_limit_bytes,
    };
    let api = Router::new()
        .route("/events", get(events::events))
        .route("/bench/latest", get(console::bench_latest))
        .route("/sdxl/enhanced/generate", post(h::sdxl_generate))
        .route("/sdxl/enhanced/validate", post(h::sdxl_validate))
        .route("/sdxl/enhanced/estimate", post(h::sdxl_estimate))
        .route("/sdxl/enhanced/schema", get(h::sdxl_schema))
        .route("/sdxl/enhanced/capabilities", get(h::sdxl_capabilities))
        .route("/sdxl/enhanced/schedulers", get(h::sdxl_schedulers))
        .route(
            "/sdxl/enhanced/controlnet-types",
            get(h::sdxl_controlnet_types),
        )
        .route("/sdxl/enhanced/styles", get(sdxl_routes::sdxl_styles))
        .route(
            "/sdxl/enhanced/recommend",
            post(sdxl_routes::sdxl_recommend),
        )
        .route("/inference/generate", post(h::generate))
        .route("/inference/stream", post(h::stream))
        .route("/inference/{request_id}", delete(h::cancel))
        .route("/sdxl/enhanced/upscale", post(h::sdxl_upscale))
        .route("/workers/status", get(h::workers_status))
        .route("/workers/restart/{id}", post(h::worker_restart))
        .route(
            "/processing/workflows",
            get(h::workflows_list).post(h::workflow_create),
        )
        .route(
            "/processing/workflows/{id}",
            get(h::workflow_get).delete(h::workflow_delete),
        )
        .route(
            "/processing/workflows/{id}/execute",
            post(h::workflow_execute),
        )
        .route("/processing/sessions", get(h::sessions_list))
        .route(
            "/processing/sessions/{id}",
            get(h::session_get).delete(h::session_delete),
        )
        .route(
            "/processing/sessions/{id}/control",
            post(h::session_control),
        )
        .route(
            "/processing/batches",
            get(h::batches_list).post(h::batch_create),
        )
        .route(
            "/processing/batches/{id}",
            get(h::batch_get).delete(h::batch_delete),
        )
        .route("/processing/batches/{id}/execute", post(h::batch_execute))
        .route("/processing/batches/{id}/cancel", post(h::batch_cancel))
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the token check: a key is looked at only for an authorized caller.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::apply,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let metrics = if server.public_metrics {
        get(h::metrics)
    } else {
        get(h::metrics).route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
    };
    let limits = Arc::new(limits::Limits::new(server));
    Router::new()
        .nest("/api", api)
        .route("/health", get(h::health))
        .route("/health/live", get(h::health_live))
        .route("/health/ready", get(h::health_ready))
        .route("/metrics", metrics)
        .method_not_allowed_fallback(method_not_allowed)
        .merge(console::page_routes())
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn(limits::json_errors))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::from_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
