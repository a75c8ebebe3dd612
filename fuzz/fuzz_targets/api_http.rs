//! The HTTP API's JSON bodies through the real router (`ferry_server::api::router`), over an
//! orchestrator with no worker types (nothing is spawned). This reaches the body types of
//! the private `api::handlers` (`InferenceRequest`, `ControlRequest`, `BatchCancel`) and
//! the `ApiJson` extractor's error mapping.
//!
//! Input: the first byte picks the route (low 4 bits) and whether the request lacks
//! `Content-Type: application/json` (bit 7); the rest is the body.
//!
//! Checks: every answer is one of 200 (validate only), 400, 404, 415 or 503, never another
//! 5xx; its body is JSON, and an error body is `{"error": {code, message, retryable}}`
//! with a known code; without the content type the answer is 415; on the SDXL routes that
//! call a worker, the verdict is the library's (`sdxl::check`, of the request without its
//! `attachments`): 503 (no SDXL worker) exactly when the request is valid (or 400 for bad
//! attachments), and `validate` answers `sdxl::validate`'s report.
#![no_main]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use ferry_server::config::{FerryConfig, ServerConfig};
use ferry_server::orchestrator::Orchestrator;
use ferry_server::state::StateStore;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use tower::ServiceExt as _;

const ROUTES: [&str; 10] = [
    "/api/inference/generate",
    "/api/inference/stream",
    "/api/sdxl/enhanced/validate",
    "/api/sdxl/enhanced/generate",
    "/api/sdxl/enhanced/estimate",
    "/api/processing/workflows",
    "/api/processing/workflows/w-1/execute",
    "/api/processing/sessions/s-1/control",
    "/api/processing/batches",
    "/api/processing/batches/b-1/cancel",
];

const CODES: [&str; 6] = [
    "invalid_request",
    "not_found",
    "unsupported_media_type",
    "unavailable",
    "payload_too_large",
    "unknown_operation",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Timers on: the router's body timeout (`server.body_timeout_ms`) uses them.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

/// One router for every input: with no worker types no request can create anything
/// (workflows and batches are refused, sessions and batches are never found), so inputs
/// cannot see each other.
fn app() -> &'static axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| {
        let config = FerryConfig {
            server: ServerConfig::default(),
            workers: BTreeMap::new(),
            workflows: Vec::new(),
            limits: Default::default(),
            sdxl: Default::default(),
            state: Default::default(),
        };
        // An in-memory store; its runner is a task of this runtime.
        runtime().block_on(async {
            let store = StateStore::open_url("memory", "fuzz", 15_000)
                .await
                .expect("in-memory state store");
            let orch = Orchestrator::with_pools(BTreeMap::new(), &config, store);
            ferry_server::api::router(orch, &config.server)
        })
    })
}

/// The style catalogue the router uses (the default `[sdxl]` section): the SDXL routes apply
/// a request's `style`/`quality` before they check it, so the oracle must too.
fn styles() -> &'static ferry_server::sdxl::Styles {
    static STYLES: OnceLock<ferry_server::sdxl::Styles> = OnceLock::new();
    STYLES.get_or_init(|| ferry_server::sdxl::Styles::new(&Default::default()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let route = ROUTES[usize::from(pick & 0x0f) % ROUTES.len()];
    let typed = pick & 0x80 == 0;

    let app = app().clone();
    let mut req = Request::builder().method(Method::POST).uri(route);
    if typed {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Body::from(body.to_vec())).unwrap();
    let (status, bytes) = runtime().block_on(async move {
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, bytes)
    });
    let answer: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{route} {status}: body is not JSON ({e}): {bytes:?}"));

    let allowed = [
        StatusCode::OK,
        StatusCode::BAD_REQUEST,
        StatusCode::NOT_FOUND,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    assert!(allowed.contains(&status), "{route}: {status} {answer}");
    if !status.is_success() {
        let err = &answer["error"];
        let code = err["code"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(CODES.contains(&code), "{route}: unknown code {code}");
        assert!(
            err["message"].is_string() && err["retryable"].is_boolean(),
            "{answer}"
        );
    }
    if !typed {
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{route} without content type"
        );
        return;
    }
    let json = serde_json::from_slice::<Value>(body).ok();
    match route {
        "/api/sdxl/enhanced/validate" => match &json {
            Some(v) => {
                assert_eq!(status, StatusCode::OK);
                let report = serde_json::to_value(styles().validate(v).unwrap()).unwrap();
                assert_eq!(answer, report);
            }
            None => assert_eq!(status, StatusCode::BAD_REQUEST),
        },
        "/api/sdxl/enhanced/generate" | "/api/sdxl/enhanced/estimate" => {
            // `attachments` is taken out (and decoded) before the request is checked.
            let mut request = json.clone();
            let attachments = request
                .as_mut()
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove("attachments"))
                .is_some();
            let valid = request
                .as_ref()
                .is_some_and(|v| styles().prepare(v).is_ok());
            if valid && attachments {
                // Bad base64 (or a bad entry) is a 400 of its own.
                assert!(
                    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_REQUEST,
                    "{route}: {answer}"
                );
            } else {
                let want = if valid {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                };
                assert_eq!(status, want, "{route}: {answer}");
            }
        }
        _ => {
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{route}: {status} {answer}"
            );
            if json.is_none() {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: malformed JSON");
            }
        }
    }
});
