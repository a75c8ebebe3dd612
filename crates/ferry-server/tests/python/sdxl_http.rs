//! The SDXL service as the old system's clients use it, against a real `ferry serve` run from
//! the repository's own `ferry.toml` (its SDXL worker pointed at a tiny pipeline): requests in
//! the C# and direct-protocol shapes, style presets and the quality boost, the recommendation,
//! an old operation name through `/api/inference/generate`, and the shipped SDXL workflows
//! (generate then upscale, with the image passed on as an attachment; a batch of prompts in
//! one style).
//!
//! Needs the ML environment (`$FERRY_ML_PYTHON`); skipped without it unless
//! `FERRY_REQUIRE_PYTHON=1`.

use crate::common;
use crate::ml_worker::ml_python_or_skip;

use base64::Engine as _;
use common::http::{Client, HttpResponse, Server};
use common::{eventually, repo_root, with_watchdog};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A hang guard only: importing torch and loading the pipeline is slow on a busy machine.
const LIMIT: Duration = Duration::from_secs(900);

fn post(c: &mut Client, path: &str, body: &Value) -> HttpResponse {
    c.request("POST", path, Some(&body.to_string()))
}

/// The repository's `ferry.toml`, its SDXL worker run by `python` on the models in `models`
/// on the CPU, `[sdxl]` boosting with the tiny refiner in at least 4 steps.
fn config(python: &Path, models: &Path) -> String {
    let text = std::fs::read_to_string(repo_root().join("ferry.toml")).unwrap();
    let mut out = text.clone();
    for (from, to) in [
        (
            "command = \".venv-ml/bin/python\"".to_owned(),
            format!("command = {:?}", python.display().to_string()),
        ),
        (
            "cwd = \".\"".to_owned(),
            format!("cwd = {:?}", repo_root().display().to_string()),
        ),
        (
            "env = { FERRY_ML_MODELS = \"models\" }".to_owned(),
            format!(
                "env = {{ FERRY_ML_MODELS = {:?}, FERRY_ML_DEVICE = \"cpu\" }}",
                models.display().to_string()
            ),
        ),
    ] {
        assert!(out.contains(&from), "ferry.toml no longer has `{from}`");
        out = out.replace(&from, &to);
    }
    out.push_str(&format!(
        "\n[sdxl]\nboost_refiner = {:?}\nboost_min_steps = 4\n",
        models.join("refiner").display().to_string()
    ));
    out
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

fn decode(b64: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap()
}

/// Runs workflow `id` on `input` and waits for its session to end; its view.
fn run_workflow(c: &mut Client, id: &str, input: &Value) -> Value {
    let r = post(c, &format!("/api/processing/workflows/{id}/execute"), input);
    assert_eq!(r.status, 202, "{}", r.body);
    let session = r.json()["id"].as_str().unwrap().to_owned();
    let mut view = Value::Null;
    eventually(&format!("session {session} of {id} ends"), || {
        view = c
            .request("GET", &format!("/api/processing/sessions/{session}"), None)
            .json();
        matches!(
            view["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    });
    view
}

#[test]
fn the_sdxl_service_takes_old_requests_styles_and_runs_the_shipped_workflows() {
    let Some(python) = ml_python_or_skip("the SDXL service over HTTP") else {
        return;
    };
    with_watchdog(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        let (base, refiner) = (dir.path().join("base"), dir.path().join("refiner"));
        let out = Command::new(&python)
            .args(["-m", "ferry_sdxl.tiny"])
            .arg(&base)
            .arg("--refiner")
            .arg(&refiner)
            .output()
            .expect("run ferry_sdxl.tiny");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Server::start(&config(&python, dir.path()));
        let mut c = server.client();
        let base = base.display().to_string();

        // The presets, as configured.
        let styles = c.request("GET", "/api/sdxl/enhanced/styles", None).json();
        let names: Vec<&str> = styles["styles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "anime",
                "cinematic",
                "digital-art",
                "fantasy-art",
                "line-art",
                "photographic"
            ]
        );
        assert_eq!(
            styles["quality"]["boost"]["refiner"],
            json!(refiner.display().to_string())
        );

        // The C# client's request, with a style: the style fills what the request leaves
        // out (its prompt, negative prompt, guidance), the request's scheduler wins.
        let csharp = json!({
            "Model": {"Base": base},
            "Scheduler": {"Type": "DPM++", "Steps": 2},
            "Hyperparameters": {"Seed": 5},
            "Conditioning": {"Prompt": "a cat"},
            "Dimensions": {"Width": 64, "Height": 64},
            "Style": "anime",
        });
        let r = post(&mut c, "/api/sdxl/enhanced/validate", &csharp);
        let v = r.json();
        assert_eq!(v["valid"], true, "{v}");
        assert!(v["normalized"]["conditioning"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("anime artwork of a cat"));
        assert_eq!(v["normalized"]["scheduler"]["type"], "DPM++ 2M");
        assert_eq!(v["normalized"]["hyperparameters"]["guidance_scale"], 7.0);
        let r = post(&mut c, "/api/sdxl/enhanced/generate", &csharp);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["data"]["scheduler"], "DPM++ 2M");
        assert_eq!(
            png_size(&decode(&v["attachments"][0]["data_base64"])),
            (64, 64)
        );

        // The direct protocol's inference data; the same field twice is named.
        let direct = json!({
            "prompt": "a cat", "model_name": base,
            "hyperparameters": {"num_inference_steps": 2, "guidance_scale": 1.0, "seed": 5},
            "dimensions": {"width": 64, "height": 64},
        });
        let r = post(&mut c, "/api/sdxl/enhanced/generate", &direct);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["data"]["steps"], 2);
        let mut twice = direct.clone();
        twice["steps"] = json!(3);
        let r = post(&mut c, "/api/sdxl/enhanced/generate", &twice);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(
            r.body.contains("steps: scheduler.steps is already given"),
            "{}",
            r.body
        );

        // An unknown style is named; so is a quality that is not one.
        let mut bad = direct.clone();
        bad["style"] = json!("vaporwave");
        let r = post(&mut c, "/api/sdxl/enhanced/generate", &bad);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("style: unknown style `vaporwave`"),
            "{}",
            r.body
        );

        // Boost: the configured refiner takes over, with more steps.
        let mut boost = direct.clone();
        boost["quality"] = json!("boost");
        let r = post(&mut c, "/api/sdxl/enhanced/generate", &boost);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(
            (v["data"]["refiner"].clone(), v["data"]["steps"].clone()),
            (json!(true), json!(4))
        );

        // An old operation name through the generic route, with a style applied on the host.
        let r = post(
            &mut c,
            "/api/inference/generate",
            &json!({"worker_type": "sdxl", "operation": "generate_sdxl_enhanced", "data": csharp}),
        );
        assert_eq!(r.status, 200, "{}", r.body);

        // Recommendations from the worker's measured rate.
        let ask = |c: &mut Client, budget: Value| {
            post(
                c,
                "/api/sdxl/enhanced/recommend",
                &json!({"request": {"model": base, "prompt": "a cat", "steps": 8, "width": 64, "height": 64}, "budget": budget}),
            )
        };
        let r = ask(&mut c, json!({"seconds": 100000}));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["fits"], true, "{v}");
        assert_eq!(
            (v["setting"]["width"].clone(), v["setting"]["steps"].clone()),
            (json!(64), json!(8))
        );
        assert!(
            v["basis"]["seconds_per_step_megapixel"].as_f64().unwrap() > 0.0,
            "{v}"
        );
        assert_eq!(v["request"]["scheduler"]["steps"], 8);
        let r = ask(&mut c, json!({"memory_mb": 0.000001}));
        assert_eq!(r.json()["fits"], false, "{}", r.body);
        let r = ask(&mut c, json!({}));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );

        // The shipped workflows: generate then upscale, the image passed on as an attachment.
        let view = run_workflow(
            &mut c,
            "sdxl_generate_upscale",
            &json!({
                "generate": {"model": base, "prompt": "a cat", "steps": 2, "width": 64, "height": 64,
                             "guidance_scale": 1.0, "style": "photographic"},
                "upscale": {"factor": 2},
            }),
        );
        assert_eq!(view["status"], "completed", "{view}");
        assert_eq!(
            (
                view["result"]["width"].clone(),
                view["result"]["height"].clone()
            ),
            (json!(128), json!(128))
        );
        let atts = view["result_attachments"].as_array().unwrap();
        assert_eq!(atts.len(), 1);
        assert_eq!(png_size(&decode(&atts[0])), (128, 128));

        // A batch of prompts in one style.
        let view = run_workflow(
            &mut c,
            "sdxl_style_batch",
            &json!({"model": base, "prompts": ["a cat", "a dog", "a boat"], "style": "cinematic",
                    "steps": 2, "width": 64, "height": 64, "seed": 3}),
        );
        assert_eq!(view["status"], "completed", "{view}");
        let results = view["result"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert!(
            results.iter().all(|r| r["scheduler"] == "DPM++ 2M Karras"),
            "{view}"
        );
        assert_eq!(view["result_attachments"].as_array().unwrap().len(), 3);
        // Without a list to go over, the step fails naming it.
        let view = run_workflow(
            &mut c,
            "sdxl_style_batch",
            &json!({"model": base, "prompt": "a cat", "style": "cinematic"}),
        );
        assert_eq!(view["status"], "failed", "{view}");
        assert!(
            view["error"]["message"]
                .as_str()
                .unwrap()
                .contains("for_each `$request.prompts` is not a list"),
            "{view}"
        );
        server.stop();
    });
}
