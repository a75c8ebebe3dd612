//! Images sent over HTTP to the SDXL worker (`ferry serve` with `python -m ferry_sdxl.main`):
//! `POST /api/sdxl/enhanced/upscale` with the image as a base64 attachment and as a
//! multipart file part, and a ControlNet generation on the tiny pipeline whose control image
//! is a multipart file part.
//!
//! Needs the ML environment, as `ml_worker.rs` (skips without it unless
//! `FERRY_REQUIRE_PYTHON=1`).

use crate::common;

use base64::Engine as _;
use common::http::Server;
use common::with_watchdog;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A hang guard only: importing torch and loading the tiny pipeline take seconds, far more
/// on a busy machine.
const LIMIT: Duration = Duration::from_secs(900);

/// A 12 x 8 RGB PNG.
const PNG_12X8: &str = "iVBORw0KGgoAAAANSUhEUgAAAAwAAAAICAIAAABChommAAAAKElEQVR4nGNkYGAQYfgvwsCIh2RhkPvPwMDIwICPZGGQI6CCYQibBAAI3jHLyo8K6QAAAABJRU5ErkJggg==";

fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

fn image(answer: &Value, i: usize) -> Vec<u8> {
    let b64 = answer["attachments"][i]["data_base64"].as_str().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn config(python: &Path, models: &Path) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
body_limit_bytes = 1048576
sdxl_worker_type = "sdxl"

[workers.sdxl]
command = {python:?}
args = ["-m", "ferry_sdxl.main", "--worker", "pipeline_manager"]
startup_timeout_ms = 600000
env = {{ FERRY_ML_DEVICE = "cpu", FERRY_ML_MODELS = {models:?} }}
[workers.sdxl.pool]
min_workers = 1
max_workers = 1
max_in_flight = 1
request_timeout_ms = 600000
health_timeout_ms = 600000
"#,
        python = python.display().to_string(),
        models = models.display().to_string(),
    )
}

fn multipart(request: &Value, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    write!(
        body,
        "--b0\r\nContent-Disposition: form-data; name=\"request\"\r\nContent-Type: application/json\r\n\r\n{request}\r\n--b0\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--b0--\r\n");
    body
}

#[test]
fn upscale_route_and_controlnet_take_images_over_http() {
    let Some(python) = super::ml_worker::ml_python_or_skip("upscale and ControlNet over HTTP")
    else {
        return;
    };
    with_watchdog(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let control = dir.path().join("canny");
        let out = Command::new(&python)
            .args(["-m", "ferry_sdxl.tiny"])
            .arg(&base)
            .arg("--controlnet")
            .arg(&control)
            .output()
            .expect("run ferry_sdxl.tiny");
        assert!(
            out.status.success(),
            "building the tiny pipeline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Server::start(&config(&python, dir.path()));
        let mut c = server.client();
        let png = base64::engine::general_purpose::STANDARD
            .decode(PNG_12X8)
            .unwrap();

        // Upscale, the image as a base64 attachment of the JSON body.
        let r = c.request(
            "POST",
            "/api/sdxl/enhanced/upscale",
            Some(&json!({"factor": 2, "attachments": [PNG_12X8]}).to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["data"]["method"], "lanczos", "{v}");
        assert_eq!(png_size(&image(&v, 0)), (24, 16));

        // ... and as a multipart file part.
        let r = c.raw(
            "POST",
            "/api/sdxl/enhanced/upscale",
            Some(&multipart(&json!({"factor": 3, "format": "png"}), &png)),
            "multipart/form-data; boundary=b0",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(png_size(&image(&r.json(), 0)), (36, 24));

        // No image: the worker's typed error; two: refused by the host.
        let r = c.request("POST", "/api/sdxl/enhanced/upscale", Some("{}"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.body.contains("attachments[0]"), "{}", r.body);
        let r = c.request(
            "POST",
            "/api/sdxl/enhanced/upscale",
            Some(&json!({"attachments": [PNG_12X8, PNG_12X8]}).to_string()),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );

        // ControlNet: the control image is attachment 0 (`{"attachment": 0}`), a file part.
        let request = json!({
            "model": {"base": base},
            "scheduler": {"type": "Euler", "steps": 2},
            "hyperparameters": {"guidance_scale": 5.0, "seed": 3},
            "conditioning": {"prompt": "a cat", "controlnet":
                {"type": "canny", "model": control, "image": {"attachment": 0}}},
            "dimensions": {"width": 64, "height": 64}
        });
        let r = c.raw(
            "POST",
            "/api/sdxl/enhanced/generate",
            Some(&multipart(&request, &png)),
            "multipart/form-data; boundary=b0",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let used = &v["data"]["controlnet"];
        assert_eq!(used["source"], "attachment 0", "{v}");
        assert_eq!(used["source_size"], json!([12, 8]), "{v}");
        assert_eq!(png_size(&image(&v, 0)), (64, 64));
    });
}
