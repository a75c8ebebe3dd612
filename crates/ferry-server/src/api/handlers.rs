//! Route handlers: parse, call the orchestrator, map the result. Nothing else.

use super::error::ApiError;
use super::extract::ApiJson;
use super::extract::Path;
use super::relay;
use super::AppState;
use crate::config::WorkflowConfig;
use crate::orchestrator::{BatchSpec, Control};
use crate::sdxl;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ferry::protocol::{Envelope, Priority};
use ferry::worker::Response as WorkerResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;

type ApiResult = Result<Response, ApiError>;

/// Body of `/api/inference/{generate,stream}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The worker type.
    pub worker_type: String,
    /// The operation.
    pub operation: String,
    /// The request data.
    #[serde(default)]
    pub data: Value,
    /// Priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Deadline in milliseconds.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

impl InferenceRequest {
    fn envelope(self) -> (String, Envelope) {
        let mut e = Envelope::request("", self.operation, self.data);
        e.priority = self.priority;
        e.deadline_ms = self.deadline_ms;
        (self.worker_type, e)
    }
}

fn response_json(r: &WorkerResponse) -> Value {
    let attachments: Vec<Value> = r
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let meta = r.envelope.attachments.get(i);
            json!({
                "name": meta.and_then(|m| m.name.clone()),
                "content_type": meta.and_then(|m| m.content_type.clone()),
                "size": a.len(),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(a),
            })
        })
        .collect();
    json!({"data": r.data, "metrics": r.envelope.metrics, "attachments": attachments})
}

pub async fn generate(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<InferenceRequest>,
) -> ApiResult {
    let (worker_type, request) = body.envelope();
    // A client that drops the connection drops this future, and with it the pool call,
    // which cancels the request at the worker.
    let r = st
        .orch
        .call_api(&worker_type, request, Vec::new(), |_| {})
        .await?;
    Ok(Json(response_json(&r)).into_response())
}

pub async fn stream(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<InferenceRequest>,
) -> ApiResult {
    let (worker_type, request) = body.envelope();
    // Refused before the stream starts, so the client gets a plain JSON error.
    st.orch.check_api_call(
        &worker_type,
        request.operation.as_deref().unwrap_or_default(),
    )?;
    let (tx, mut rx) = relay::relay();
    let orch = st.orch.clone();
    let task = tokio::spawn(async move {
        let events = tx.clone();
        let result = orch
            // Checked above, before the stream started.
            .call(&worker_type, request, Vec::new(), move |e| {
                let name = e.event_name.as_deref().unwrap_or("event");
                let data = e.data.as_ref().unwrap_or(&Value::Null);
                let progress = name == ferry::protocol::EVENT_PROGRESS;
                events.event(
                    Event::default().event(name).data(data.to_string()),
                    progress,
                );
            })
            .await;
        let last = match result {
            Ok(r) => Event::default()
                .event("result")
                .data(response_json(&r).to_string()),
            Err(e) => {
                let b = e.to_body();
                Event::default()
                    .event("error")
                    .data(json!({"error": {"code": b.code, "message": b.message, "retryable": b.retryable}}).to_string())
            }
        };
        tx.finish(last);
    });
    rx.abort_on_drop(task.abort_handle());
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.next().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Forwards an SDXL route to the configured SDXL worker type.
async fn sdxl(st: &AppState, operation: &str, data: Value) -> ApiResult {
    let worker_type = st.sdxl_worker_type.clone();
    if st.orch.pool(&worker_type).is_err() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no `{worker_type}` worker type is configured for the SDXL routes"),
        ));
    }
    let r = st
        .orch
        .call(
            &worker_type,
            Envelope::request("", operation, data),
            Vec::new(),
            |_| {},
        )
        .await?;
    Ok(Json(response_json(&r)).into_response())
}

pub async fn sdxl_generate(State(st): State<AppState>, ApiJson(data): ApiJson<Value>) -> ApiResult {
    let data = st.orch.styles().prepare(&data)?;
    sdxl(&st, "inference.generate", data).await
}
pub async fn sdxl_estimate(State(st): State<AppState>, ApiJson(data): ApiJson<Value>) -> ApiResult {
    let data = st.orch.styles().prepare(&data)?;
    sdxl(&st, "inference.estimate", data).await
}
/// Validated here, against the embedded schema: no worker is called.
pub async fn sdxl_validate(State(st): State<AppState>, ApiJson(data): ApiJson<Value>) -> ApiResult {
    let report = st
        .orch
        .styles()
        .validate(&data)
        .map_err(sdxl::RequestError::from)?;
    Ok(Json(report).into_response())
}
/// The schema file, as embedded.
pub async fn sdxl_schema() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        sdxl::SCHEMA_JSON,
    )
        .into_response()
}
pub async fn sdxl_capabilities(State(st): State<AppState>) -> ApiResult {
    sdxl(&st, "inference.capabilities", Value::Null).await
}
pub async fn sdxl_schedulers(State(st): State<AppState>) -> ApiResult {
    sdxl(&st, "scheduler.list", Value::Null).await
}
pub async fn sdxl_controlnet_types(State(st): State<AppState>) -> ApiResult {
    sdxl(&st, "conditioning.controlnet_types", Value::Null).await
}

pub async fn workers_status(State(st): State<AppState>) -> ApiResult {
    Ok(Json(json!({"workers": st.orch.worker_status()})).into_response())
}

pub async fn worker_restart(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.restart_worker(&id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "restarting": true})),
    )
        .into_response())
}

pub async fn workflows_list(State(st): State<AppState>) -> ApiResult {
    Ok(Json(json!({"workflows": st.orch.workflows()})).into_response())
}

pub async fn workflow_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.workflow(&id)?).into_response())
}

pub async fn workflow_create(
    State(st): State<AppState>,
    ApiJson(wf): ApiJson<WorkflowConfig>,
) -> ApiResult {
    let id = wf.id.clone();
    st.orch.put_workflow(wf)?;
    Ok((StatusCode::CREATED, Json(st.orch.workflow(&id)?)).into_response())
}

pub async fn workflow_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_workflow(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn workflow_execute(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<Value>,
) -> ApiResult {
    let session = st.orch.execute_workflow(&id, input)?;
    Ok((StatusCode::ACCEPTED, Json(session.view())).into_response())
}

pub async fn sessions_list(State(st): State<AppState>) -> ApiResult {
    let sessions: Vec<_> = st.orch.sessions().iter().map(|s| s.view()).collect();
    Ok(Json(json!({"sessions": sessions})).into_response())
}

pub async fn session_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.session(&id)?.view()).into_response())
}

pub async fn session_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_session(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /api/processing/sessions/{id}/control`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// `pause`, `resume`, `cancel` or `restart`.
    pub action: Control,
}

pub async fn session_control(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ControlRequest>,
) -> ApiResult {
    let session = st.orch.session(&id)?;
    session.control(body.action)?;
    Ok(Json(session.view()).into_response())
}

pub async fn batches_list(State(st): State<AppState>) -> ApiResult {
    let batches: Vec<_> = st.orch.batches().iter().map(|b| b.view()).collect();
    Ok(Json(json!({"batches": batches})).into_response())
}

pub async fn batch_create(
    State(st): State<AppState>,
    ApiJson(spec): ApiJson<BatchSpec>,
) -> ApiResult {
    let batch = st.orch.create_batch(spec)?;
    Ok((StatusCode::CREATED, Json(batch.view())).into_response())
}

pub async fn batch_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.batch(&id)?.view()).into_response())
}

pub async fn batch_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_batch(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn batch_execute(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let batch = st.orch.batch(&id)?;
    batch.execute(st.orch.clone())?;
    Ok((StatusCode::ACCEPTED, Json(batch.view())).into_response())
}

/// Body of `POST /api/processing/batches/{id}/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCancel {
    /// Item indices to cancel; all when absent.
    #[serde(default)]
    pub items: Option<Vec<usize>>,
}

pub async fn batch_cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BatchCancel>,
) -> ApiResult {
    let batch = st.orch.batch(&id)?;
    batch.cancel(body.items.as_deref());
    Ok(Json(batch.view()).into_response())
}

pub async fn health(State(st): State<AppState>) -> Response {
    let ready = st.orch.is_ready();
    let body = Json(
        json!({"status": if ready { "ready" } else { "not_ready" }, "worker_types": st.orch.readiness()}),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.orch.render_metrics(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
