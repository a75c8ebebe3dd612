//! Route handlers: parse, call the orchestrator, map the result. Nothing else.

use super::cancel::Registration;
use super::error::ApiError;
use super::extract::ApiJson;
use super::extract::Path;
use super::inputs::{self, Attachment, WithAttachments};
use super::relay;
use super::AppState;
use crate::config::WorkflowConfig;
use crate::orchestrator::{BatchSpec, Control, OrchestratorError};
use crate::sdxl;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ferry::codec::json_text;
use ferry::protocol::{Envelope, ErrorBody, ErrorCode, Priority};
use ferry::worker::Response as WorkerResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::fmt::Write as _;

type ApiResult = Result<Response, ApiError>;

/// Body of `/api/inference/{generate,stream}` (its `attachments` are taken out first: see
/// [`inputs`](super::inputs)).
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
    /// The client's name for the request, for `DELETE /api/inference/{request_id}`; the
    /// server makes one when absent.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl InferenceRequest {
    fn envelope(self) -> (String, Envelope) {
        let mut e = Envelope::request("", self.operation, self.data);
        e.priority = self.priority;
        e.deadline_ms = self.deadline_ms;
        (self.worker_type, e)
    }
}

/// The answer of `/api/inference/{generate,stream}`, written from the worker's response in
/// place (its `data` is not copied into a new `Value` first). The keys are in the order a
/// `serde_json::Value` object puts them (sorted), as the answer always had them.
struct InferenceAnswer<'a> {
    attachments: Vec<AnswerAttachment<'a>>,
    data: &'a Value,
    metrics: Value,
    /// Absent on the SDXL routes, which name no request.
    request_id: Option<&'a str>,
}

/// One attachment of an [`InferenceAnswer`] (keys sorted, as above).
struct AnswerAttachment<'a> {
    content_type: Option<&'a str>,
    data_base64: String,
    name: Option<&'a str>,
    size: usize,
}

impl<'a> InferenceAnswer<'a> {
    fn new(r: &'a WorkerResponse, request_id: Option<&'a str>) -> Self {
        let attachments = r
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let meta = r.envelope.attachments.get(i);
                AnswerAttachment {
                    content_type: meta.and_then(|m| m.content_type.as_deref()),
                    data_base64: base64::engine::general_purpose::STANDARD.encode(a),
                    name: meta.and_then(|m| m.name.as_deref()),
                    size: a.len(),
                }
            })
            .collect();
        InferenceAnswer {
            attachments,
            data: &r.data,
            // Small and rare: through a `Value`, so its keys come out sorted as before.
            metrics: json!(r.envelope.metrics),
            request_id,
        }
    }

    /// The JSON text, as `serde_json` writes it, with its strings checked for escapes 64
    /// bytes at a time ([`json_text`]): `serde_json`'s own scan took 0.65-0.95 ms for a
    /// 1 MiB string, more than a plain HTTP echo's whole round trip (docs/benchmarks.md,
    /// eleventh and twelfth rounds).
    fn to_json(&self) -> String {
        let base64: usize = self.attachments.iter().map(|a| a.data_base64.len()).sum();
        let mut out = String::with_capacity(base64 + json_size_hint(self.data) + 128);
        out.push_str("{\"attachments\":[");
        for (i, a) in self.attachments.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"content_type\":");
            push_optional_str(&mut out, a.content_type);
            out.push_str(",\"data_base64\":");
            json_text::push_str(&mut out, &a.data_base64);
            out.push_str(",\"name\":");
            push_optional_str(&mut out, a.name);
            out.push_str(",\"size\":");
            // Writing into a `String` cannot fail.
            let _ = write!(out, "{}", a.size);
            out.push('}');
        }
        out.push_str("],\"data\":");
        json_text::push_value(&mut out, self.data);
        out.push_str(",\"metrics\":");
        json_text::push_value(&mut out, &self.metrics);
        if let Some(id) = self.request_id {
            out.push_str(",\"request_id\":");
            json_text::push_str(&mut out, id);
        }
        out.push('}');
        out
    }
}

fn push_optional_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_text::push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Room for `data`'s JSON text when it is a string, the large case (other values grow the
/// buffer as they are written).
fn json_size_hint(data: &Value) -> usize {
    match data {
        Value::String(s) => s.len() + 2,
        _ => 0,
    }
}

/// `200` with `body` as `application/json`.
fn json_answer(body: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The answer to a request cancelled by `DELETE /api/inference/{request_id}`.
fn cancelled(id: &str) -> ApiError {
    ErrorBody::new(
        ErrorCode::Cancelled,
        format!("request `{id}` was cancelled by DELETE /api/inference/{id}"),
    )
    .into()
}

/// Runs `call` until it ends or `registration`'s request is cancelled (which drops the
/// call: the engine then sends the worker a `cancel`).
async fn unless_cancelled<T>(
    registration: &mut Registration,
    call: impl std::future::Future<Output = Result<T, OrchestratorError>>,
) -> Result<T, ApiError> {
    tokio::select! {
        result = call => Ok(result?),
        _ = &mut registration.cancelled => Err(cancelled(registration.id())),
    }
}

pub async fn generate(State(st): State<AppState>, input: WithAttachments) -> ApiResult {
    let (body, attachments) = input.parse::<InferenceRequest>()?;
    let mut registration = st.live.register(body.request_id.clone())?;
    let (worker_type, mut request) = body.envelope();
    let attachments = inputs::attach(&mut request, attachments);
    // A client that drops the connection drops this future, and with it the pool call,
    // which cancels the request at the worker.
    let call = st.orch.call_api(&worker_type, request, attachments, |_| {});
    let r = unless_cancelled(&mut registration, call).await?;
    Ok(json_answer(
        InferenceAnswer::new(&r, Some(registration.id())).to_json(),
    ))
}

pub async fn stream(State(st): State<AppState>, input: WithAttachments) -> ApiResult {
    let (body, attachments) = input.parse::<InferenceRequest>()?;
    let mut registration = st.live.register(body.request_id.clone())?;
    let (worker_type, mut request) = body.envelope();
    let attachments = inputs::attach(&mut request, attachments);
    // Refused before the stream starts, so the client gets a plain JSON error.
    st.orch.check_api_call(
        &worker_type,
        request.operation.as_deref().unwrap_or_default(),
    )?;
    let (tx, mut rx) = relay::relay();
    // The first event names the request, for `DELETE /api/inference/{request_id}`.
    tx.event(
        Event::default()
            .event("request")
            .data(json!({"request_id": registration.id()}).to_string()),
        false,
    );
    let orch = st.orch.clone();
    let task = tokio::spawn(async move {
        let events = tx.clone();
        // Checked above, before the stream started.
        let call = orch.call(&worker_type, request, attachments, move |e| {
            let name = e.event_name.as_deref().unwrap_or("event");
            let data = e.data.as_ref().unwrap_or(&Value::Null);
            let progress = name == ferry::protocol::EVENT_PROGRESS;
            events.event(
                Event::default().event(name).data(data.to_string()),
                progress,
            );
        });
        let result = unless_cancelled(&mut registration, call).await;
        let last = match result {
            Ok(r) => Event::default()
                .event("result")
                .data(InferenceAnswer::new(&r, Some(registration.id())).to_json()),
            Err(e) => Event::default().event("error").data(
                json!({"error": {"code": e.code(), "message": e.message(), "retryable": e.is_retryable()}})
                    .to_string(),
            ),
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

/// `DELETE /api/inference/{request_id}`: cancels a request in progress.
pub async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.live.cancel(&id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"request_id": id, "cancelled": true})),
    )
        .into_response())
}

/// Forwards an SDXL route to the configured SDXL worker type.
async fn sdxl(st: &AppState, operation: &str, data: Value) -> ApiResult {
    sdxl_with(st, operation, data, Vec::new()).await
}

/// The worker type of the SDXL routes, or `503 unavailable` when no pool serves it.
pub(super) fn sdxl_worker_type(st: &AppState) -> Result<String, ApiError> {
    let worker_type = st.sdxl_worker_type.to_string();
    if st.orch.pool(&worker_type).is_err() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no `{worker_type}` worker type is configured for the SDXL routes"),
        ));
    }
    Ok(worker_type)
}

/// [`sdxl`] with attachments.
async fn sdxl_with(
    st: &AppState,
    operation: &str,
    data: Value,
    attachments: Vec<Attachment>,
) -> ApiResult {
    let worker_type = sdxl_worker_type(st)?;
    let mut request = Envelope::request("", operation, data);
    let attachments = inputs::attach(&mut request, attachments);
    let r = st
        .orch
        .call(&worker_type, request, attachments, |_| {})
        .await?;
    Ok(json_answer(InferenceAnswer::new(&r, None).to_json()))
}

pub async fn sdxl_generate(State(st): State<AppState>, input: WithAttachments) -> ApiResult {
    let data = st.orch.styles().prepare(&input.body)?;
    sdxl_with(&st, "inference.generate", data, input.attachments).await
}
pub async fn sdxl_estimate(State(st): State<AppState>, input: WithAttachments) -> ApiResult {
    let data = st.orch.styles().prepare(&input.body)?;
    sdxl_with(&st, "inference.estimate", data, input.attachments).await
}
/// `POST /api/sdxl/enhanced/upscale`: the image (one attachment, or `path`) upscaled by
/// the worker's `postprocessing.upscale`, with the JSON's settings (`factor`, `method`,
/// `format`, ...).
pub async fn sdxl_upscale(State(st): State<AppState>, input: WithAttachments) -> ApiResult {
    let WithAttachments { body, attachments } = input;
    let body = match body {
        Value::Null => json!({}),
        Value::Object(o) => Value::Object(o),
        _ => {
            return Err(ApiError::invalid(
                "expected a JSON object (factor, method, format, ...)",
            ))
        }
    };
    if attachments.len() > 1 {
        return Err(ApiError::invalid(format!(
            "attachments: the upscale route takes one image, not {}",
            attachments.len()
        )));
    }
    sdxl_with(&st, "postprocessing.upscale", body, attachments).await
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
    Ok(Json(json!({"workflows": st.orch.workflows().await?})).into_response())
}

pub async fn workflow_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.workflow(&id).await?).into_response())
}

pub async fn workflow_create(
    State(st): State<AppState>,
    ApiJson(wf): ApiJson<WorkflowConfig>,
) -> ApiResult {
    let id = wf.id.clone();
    st.orch.put_workflow(wf).await?;
    Ok((StatusCode::CREATED, Json(st.orch.workflow(&id).await?)).into_response())
}

pub async fn workflow_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_workflow(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn workflow_execute(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<Value>,
) -> ApiResult {
    let session = st.orch.execute_workflow(&id, input).await?;
    Ok((StatusCode::ACCEPTED, Json(session)).into_response())
}

pub async fn sessions_list(State(st): State<AppState>) -> ApiResult {
    let sessions = st.orch.sessions().await?;
    Ok(Json(json!({"sessions": sessions})).into_response())
}

pub async fn session_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.session(&id).await?).into_response())
}

pub async fn session_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_session(&id).await?;
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
    let view = st.orch.control_session(&id, body.action).await?;
    Ok(Json(view).into_response())
}

pub async fn batches_list(State(st): State<AppState>) -> ApiResult {
    let batches = st.orch.batches().await?;
    Ok(Json(json!({"batches": batches})).into_response())
}

pub async fn batch_create(
    State(st): State<AppState>,
    ApiJson(spec): ApiJson<BatchSpec>,
) -> ApiResult {
    let batch = st.orch.create_batch(spec).await?;
    Ok((StatusCode::CREATED, Json(batch)).into_response())
}

pub async fn batch_get(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(st.orch.batch(&id).await?).into_response())
}

pub async fn batch_delete(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.orch.delete_batch(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn batch_execute(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let batch = st.orch.execute_batch(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(batch)).into_response())
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
    let batch = st.orch.cancel_batch(&id, body.items.as_deref()).await?;
    Ok(Json(batch).into_response())
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

/// `GET /health/live`: the process serves HTTP (a liveness probe: restart it when this
/// stops answering).
pub async fn health_live() -> Response {
    Json(json!({"status": "live"})).into_response()
}

/// `GET /health/ready`: every worker type has a ready worker and the state store answers
/// (a readiness probe: send traffic only while this is 200).
pub async fn health_ready(State(st): State<AppState>) -> Response {
    let workers = st.orch.is_ready();
    let state = st.orch.state_ready().await;
    let ready = workers && state.is_ok();
    let body = Json(json!({
        "status": if ready { "ready" } else { "not_ready" },
        "worker_types": st.orch.readiness(),
        "state": match &state {
            Ok(()) => json!({"ready": true, "backend": st.orch.store().backend().as_str()}),
            Err(e) => json!({"ready": false, "backend": st.orch.store().backend().as_str(), "error": e.to_string()}),
        },
    }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry::protocol::{AttachmentMeta, Metrics};

    /// How the answer was built before it was serialized in place: the reference.
    fn through_value(r: &WorkerResponse, request_id: Option<&str>) -> String {
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
        let mut answer =
            json!({"data": r.data, "metrics": r.envelope.metrics, "attachments": attachments});
        if let Some(id) = request_id {
            answer["request_id"] = json!(id);
        }
        answer.to_string()
    }

    #[test]
    fn inference_answer_is_byte_for_byte_the_value_built_one() {
        let mut envelope = Envelope::response("w-1", "r-1", Value::Null);
        envelope.data = None;
        let plain = WorkerResponse {
            envelope: envelope.clone(),
            data: json!({"text": "a \"quoted\" é", "n": [1, 2.5, null], "z": {"b": 1, "a": 2}}),
            attachments: Vec::new(),
        };
        envelope.metrics = Some(Metrics {
            processing_time_ms: Some(1.5),
            memory_usage_mb: None,
            gpu_utilization: Some(0.25),
        });
        envelope.attachments = vec![
            AttachmentMeta {
                name: Some("a.png".into()),
                content_type: Some("image/png".into()),
                size: 3,
                data_base64: None,
                path: None,
            },
            AttachmentMeta::default(),
        ];
        let full = WorkerResponse {
            envelope,
            data: json!("abc"),
            attachments: vec![vec![1, 2, 3], vec![255]],
        };
        for r in [&plain, &full] {
            for id in [Some("req-7"), None] {
                assert_eq!(InferenceAnswer::new(r, id).to_json(), through_value(r, id));
            }
        }
    }
}
