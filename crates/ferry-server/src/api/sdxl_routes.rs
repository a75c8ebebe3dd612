//! The SDXL routes of style presets and recommendations: `GET /api/sdxl/enhanced/styles`,
//! `POST /api/sdxl/enhanced/recommend`.

use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::sdxl::recommend::{recommend, Basis, Budget, RecommendError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry::protocol::Envelope;
use serde::Deserialize;
use serde_json::{json, Value};

type ApiResult = Result<Response, ApiError>;

/// The presets in force and what `"quality": "boost"` does. No worker is called.
pub async fn sdxl_styles(State(st): State<AppState>) -> ApiResult {
    Ok(Json(st.orch.styles().describe()).into_response())
}

/// Body of `POST /api/sdxl/enhanced/recommend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The generation request (any form, with `style` and `quality` if wanted).
    pub request: Value,
    /// What it must fit.
    pub budget: Budget,
}

impl From<RecommendError> for ApiError {
    fn from(e: RecommendError) -> Self {
        let status = match e {
            RecommendError::NotMeasured => StatusCode::CONFLICT,
            RecommendError::Budget(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// Asks the SDXL worker's `inference.estimate` about the request once, then weighs smaller
/// settings against the budget ([`crate::sdxl::recommend`]).
pub async fn sdxl_recommend(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<RecommendRequest>,
) -> ApiResult {
    let request = st
        .orch
        .styles()
        .prepare(&body.request)
        .map_err(|e| ApiError::invalid(format!("request.{e}")))?;
    let worker_type = super::handlers::sdxl_worker_type(&st)?;
    let estimate = st
        .orch
        .call(
            &worker_type,
            Envelope::request("", "inference.estimate", request.clone()),
            Vec::new(),
            |_| {},
        )
        .await?;
    let basis = Basis::from_estimate(&request, &estimate.data).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "protocol",
            format!(
                "the worker's inference.estimate answer lacks steps, images or \
                 activation_bytes_per_image: {}",
                estimate.data
            ),
        )
    })?;
    let found = recommend(&basis, &body.budget)?;
    let s = found.setting;
    let mut recommended = request;
    recommended["dimensions"] = json!({"width": s.width, "height": s.height});
    recommended["scheduler"]["steps"] = json!(s.steps);
    recommended["hyperparameters"]["num_images"] = json!(s.num_images);
    Ok(Json(json!({
        "fits": found.fits,
        "setting": s,
        "request": recommended,
        "candidates": found.candidates,
        "basis": {
            "device": estimate.data.get("device"),
            "seconds_per_step_megapixel": basis.seconds_per_step_mp,
            "activation_bytes_per_megapixel": basis.bytes_per_pixel * 1e6,
            "free_memory_bytes": basis.free_memory_bytes,
            "estimate": estimate.data,
        },
    }))
    .into_response())
}
