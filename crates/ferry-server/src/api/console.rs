//! The web console at `/` and the routes only it needs (`GET /api/bench/latest`; the live
//! events are in `events.rs`).
//!
//! The page is plain HTML, CSS and JavaScript with no build step, embedded in the binary
//! (`src/api/console/`), so `ferry serve` needs nothing beside itself. The page and its assets
//! are open (it asks for the bearer token itself); everything it reads goes through `/api`,
//! under the token when one is configured. See `docs/console.md`.

use super::error::ApiError;
use super::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");
const FAVICON_SVG: &str = include_str!("console/favicon.svg");

/// The page's policy: its own scripts and styles only; images from `data:` (generated PNGs).
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// What the console's routes need beside the orchestrator: where the benchmark results are,
/// and the switch that ends the open `/api/events` streams. Added to the app with
/// [`with_console`]; without it the console still works, with no benchmark file.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    bench_json: Option<PathBuf>,
    close: Arc<watch::Sender<bool>>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ConsoleOptions {
    /// Serves `bench_json` (the JSON `ferry bench --json` writes) at `GET /api/bench/latest`,
    /// read at each request, so a newer run shows without a restart.
    pub fn new(bench_json: Option<PathBuf>) -> Self {
        ConsoleOptions {
            bench_json,
            close: Arc::new(watch::channel(false).0),
        }
    }

    /// The default benchmark file for a configuration file: `docs/bench/latest.json` in the
    /// configuration file's folder.
    pub fn default_bench_json(config_file: &Path) -> PathBuf {
        config_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("docs/bench/latest.json")
    }

    /// The benchmark file, if any.
    pub fn bench_json(&self) -> Option<&Path> {
        self.bench_json.as_deref()
    }

    /// Ends every open `GET /api/events` stream (and those opened later), so that a graceful
    /// shutdown is not held by consoles left open.
    pub fn close_streams(&self) {
        self.close.send_replace(true);
    }

    /// Turns true when the streams are to end.
    pub(super) fn closed(&self) -> watch::Receiver<bool> {
        self.close.subscribe()
    }
}

/// `app` with the console's settings available to its routes.
pub fn with_console(app: Router, console: ConsoleOptions) -> Router {
    app.layer(Extension(console))
}

/// The page and its assets (no token: the page asks for it).
pub(super) fn page_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route(
            "/console/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/console/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route(
            "/console/favicon.svg",
            get(|| asset("image/svg+xml", FAVICON_SVG)),
        )
}

async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML).await;
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Embedded in the binary: revalidate, so an upgraded server is seen at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/bench/latest`: the benchmark file verbatim (`application/json`), `404 not_found`
/// when there is none, `500 internal` when it is not JSON.
pub async fn bench_latest(
    console: Option<Extension<ConsoleOptions>>,
) -> Result<Response, ApiError> {
    let Some(path) = console.and_then(|Extension(c)| c.bench_json) else {
        return Err(ApiError::not_found(
            "no benchmark results: start `ferry serve` with --bench-json PATH",
        ));
    };
    let shown = path.display().to_string();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let text = match text {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "no benchmark results at {shown} (write them with `ferry bench --json {shown}`)"
            )))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot read {shown}: {e}"),
            ))
        }
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{shown} is not JSON: {e}"),
        ));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}
