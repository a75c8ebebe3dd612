//! The SDXL request schema on the host: `/api/sdxl/enhanced/{validate,schema}` answered without
//! a worker, `generate` and `estimate` refusing invalid requests before any worker is called
//! (against a real `ferry serve` on loopback with the Rust echo worker), and the Rust port of
//! the flat form checked against the Python worker's `request.py` over the same cases.

use crate::common;

use common::http::{Client, HttpResponse, Server};
use common::{with_watchdog, WATCHDOG};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The echo worker only; `sdxl_extra` goes under `[server]`.
fn config(sdxl_extra: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
{sdxl_extra}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1
"#,
        ferry = common::ferry_bin()
    )
}

fn schema_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("workers/ml/ferry_sdxl/schema/generation_request.json")
}

fn post(c: &mut Client, path: &str, body: &Value) -> HttpResponse {
    c.request("POST", path, Some(&body.to_string()))
}

/// `POST /validate` of `body`: 200, and the fields its errors name, in order.
fn invalid_fields(c: &mut Client, body: Value) -> Vec<String> {
    let r = post(c, "/api/sdxl/enhanced/validate", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["valid"], false, "{body} should be invalid: {v}");
    assert_eq!(v["normalized"], Value::Null, "{v}");
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            e["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn validate_answers_field_named_errors_without_any_worker() {
    with_watchdog(WATCHDOG, || {
        // No `sdxl` worker type is configured: the host validates by itself.
        let server = Server::start(&config(""));
        let mut c = server.client();

        let nested = json!({
            "model": {"base": "/models/sdxl-base", "refiner": "/models/sdxl-refiner", "vae": null},
            "scheduler": {"type": "DPM++ 2M", "steps": 30},
            "hyperparameters": {"guidance_scale": 7.5, "seed": 42, "num_images": 1, "refiner_fraction": 0.8},
            "conditioning": {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry",
                             "loras": [{"path": "/loras/style", "weight": 0.8}], "controlnet": null},
            "dimensions": {"width": 1024, "height": 1024},
            "output": {"format": "png", "save_dir": "/tmp/out"},
        });
        let r = post(&mut c, "/api/sdxl/enhanced/validate", &nested);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            json!({"valid": true, "errors": [], "normalized": nested})
        );

        let flat = json!({"model": "/models/sdxl-base", "prompt": "a fox", "width": 768,
                          "num_inference_steps": 20, "scheduler": "Euler a", "seed": 7,
                          "high_noise_frac": 0.7, "output_format": "webp"});
        let r = post(&mut c, "/api/sdxl/enhanced/validate", &flat);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            json!({"valid": true, "errors": [], "normalized": {
                "model": {"base": "/models/sdxl-base"},
                "conditioning": {"prompt": "a fox"},
                "dimensions": {"width": 768},
                "scheduler": {"steps": 20, "type": "Euler a"},
                "hyperparameters": {"seed": 7, "refiner_fraction": 0.7},
                "output": {"format": "webp"},
            }})
        );

        // Missing prompt, nested and flat.
        assert_eq!(
            invalid_fields(
                &mut c,
                json!({"model": {"base": "/m"}, "conditioning": {"negative_prompt": "x"}})
            ),
            ["conditioning.prompt"]
        );
        assert_eq!(
            invalid_fields(&mut c, json!({"model": "/m", "width": 512})),
            ["conditioning"]
        );
        // Wrong types.
        assert_eq!(
            invalid_fields(
                &mut c,
                json!({"model": "/m", "prompt": 5, "steps": "many", "guidance_scale": "high"})
            ),
            [
                "conditioning.prompt",
                "hyperparameters.guidance_scale",
                "scheduler.steps"
            ]
        );
        // Out of range and off the grid.
        let r = post(
            &mut c,
            "/api/sdxl/enhanced/validate",
            &json!({"model": "/m", "prompt": "x", "width": 4096, "height": 70}),
        )
        .json();
        assert_eq!(
            r["errors"],
            json!([
                {"field": "dimensions.height", "message": "70 is not a multiple of 8"},
                {"field": "dimensions.width", "message": "4096 is greater than the maximum of 2048"},
            ]),
            "{r}"
        );
        // Unknown fields: the schema refuses them at every level; the flat form names its own.
        assert_eq!(
            invalid_fields(
                &mut c,
                json!({"model": {"base": "/m", "colour": "red"}, "conditioning": {"prompt": "x"}, "extra": 1})
            ),
            ["extra", "model.colour"]
        );
        let r = post(
            &mut c,
            "/api/sdxl/enhanced/validate",
            &json!({"model": "/m", "prompt": "x", "widht": 512}),
        )
        .json();
        assert_eq!(r["errors"][0]["field"], "widht", "{r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().starts_with(
            "not a field of the flat request form (known: base, conditioning, control_guidance_end,"
        ));
        // JSON that is not an object is still a validation answer ...
        assert_eq!(invalid_fields(&mut c, json!(["a fox"])), ["(request)"]);
        // ... but a body that is not JSON at all is the usual typed error.
        let r = c.request("POST", "/api/sdxl/enhanced/validate", Some("{nope"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"));
    });
}

#[test]
fn schema_endpoint_serves_the_workers_schema_file() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = c.request("GET", "/api/sdxl/enhanced/schema", None);
        assert_eq!(r.status, 200, "{}", r.body);
        let file = std::fs::read_to_string(schema_path()).unwrap();
        assert_eq!(r.body, file, "the file verbatim, one source of truth");
        assert_eq!(
            r.json()["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let guarded = Server::start(&config(r#"token = "s3cret""#));
        let r = guarded
            .client()
            .request("GET", "/api/sdxl/enhanced/schema", None);
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    });
}

/// `ferry_requests_total` lines of `/metrics` for `operation`.
fn requests_for(c: &mut Client, operation: &str) -> Vec<String> {
    let m = c.request("GET", "/metrics", None).body;
    let needle = format!(r#"operation="{operation}""#);
    m.lines()
        .filter(|l| l.starts_with("ferry_requests_total") && l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn generate_and_estimate_refuse_invalid_requests_before_any_worker() {
    with_watchdog(WATCHDOG, || {
        // The SDXL routes call the echo worker here, which serves none of their operations: a
        // request that reaches it is answered `unknown_operation`, and is counted in /metrics.
        let server = Server::start(&config(r#"sdxl_worker_type = "echo""#));
        let mut c = server.client();
        for (route, operation) in [
            ("generate", "inference.generate"),
            ("estimate", "inference.estimate"),
        ] {
            let path = format!("/api/sdxl/enhanced/{route}");
            let r = post(
                &mut c,
                &path,
                &json!({"model": "/m", "prompt": "x", "width": 70}),
            );
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (400, "invalid_request"),
                "{}",
                r.body
            );
            assert_eq!(
                r.json()["error"]["message"],
                "dimensions.width: 70 is not a multiple of 8"
            );
            let r = post(
                &mut c,
                &path,
                &json!({"model": {"base": "/m"}, "conditioning": {}}),
            );
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("conditioning.prompt: "));
            assert_eq!(
                requests_for(&mut c, operation),
                Vec::<String>::new(),
                "no worker was called for {route}"
            );

            // A valid request, flat or nested, goes on to the worker.
            let r = post(&mut c, &path, &json!({"model": "/m", "prompt": "x"}));
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (400, "unknown_operation"),
                "{}",
                r.body
            );
            assert!(r.body.contains(operation), "{}", r.body);
            assert_eq!(requests_for(&mut c, operation).len(), 1);
        }

        // Capabilities forwards the SDXL worker's `inference.capabilities`, not the runtime's.
        let r = c.request("GET", "/api/sdxl/enhanced/capabilities", None);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body.contains("`inference.capabilities`"),
            "forwarded as inference.capabilities: {}",
            r.body
        );

        // Without an SDXL worker type, an invalid request is still refused as invalid; a valid
        // one finds no worker.
        let server = Server::start(&config(""));
        let mut c = server.client();
        let r = post(
            &mut c,
            "/api/sdxl/enhanced/generate",
            &json!({"model": "/m", "prompt": "x", "steps": 0}),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("scheduler.steps: "));
        let r = post(
            &mut c,
            "/api/sdxl/enhanced/generate",
            &json!({"model": "/m", "prompt": "x"}),
        );
        assert_eq!((r.status, r.error_code().as_str()), (503, "unavailable"));
    });
}

// -- the Rust port against the Python worker ------------------------------------------------

/// Loads `request.py` without the package's native module (it needs only `errors.py` and
/// `jsonschema`) and answers, per case read from stdin, what the worker's code makes of it.
/// `fields` names each error as the host does (a missing or unexpected property by itself),
/// in the worker's order (sorted by the error's path), so the two validators can be compared.
const PYTHON: &str = r#"
import json, sys
import jsonschema
from ferry_worker.errors import InvalidRequest
from ferry_sdxl import request as r

def fields(nested):
    validator = jsonschema.Draft202012Validator(r.schema())
    out = []
    for e in sorted(validator.iter_errors(nested), key=lambda e: list(e.absolute_path)):
        path = [str(p) for p in e.absolute_path]
        if e.validator == "required":
            out.append(".".join(path + [e.message.split("'")[1]]))  # as request.py names it
        elif e.validator == "additionalProperties":
            known = e.schema.get("properties", {})
            out += [".".join(path + [k]) for k in sorted(e.instance) if k not in known]
        else:
            out.append(".".join(path) or "(request)")
    return out

answers = []
for case in json.load(sys.stdin):
    answer = {"flat": isinstance(case, dict) and r.is_flat(case)}
    if answer["flat"]:
        try:
            answer["nested"] = r.to_nested(case)
        except InvalidRequest as exc:
            answer["unknown"] = exc.message.split(":")[0]
    try:
        answer["normalized"] = r.validate(case)
    except InvalidRequest:
        answer["normalized"] = None
    if isinstance(case, dict) and "unknown" not in answer:
        answer["fields"] = fields(answer.get("nested", case))
    answers.append(answer)
json.dump(answers, sys.stdout)
"#;

/// The cases both sides judge: every flat key and alias, each kind of schema error, edges of
/// every range, and inputs that are not requests at all.
fn cases() -> Vec<Value> {
    let base = || json!({"model": {"base": "/m"}, "conditioning": {"prompt": "x"}});
    let with = |section: &str, value: Value| {
        let mut v = base();
        v[section] = value;
        v
    };
    vec![
        base(),
        json!({"model": "/m", "prompt": "x"}),
        json!({
            "model": "/m", "refiner": "/r", "vae": "/v", "scheduler": "DDIM", "steps": 12,
            "guidance_scale": 5.5, "seed": 7, "num_images": 2, "refiner_fraction": 0.7,
            "prompt": "a fox", "negative_prompt": "blurry", "loras": [{"path": "/l", "weight": 0.5}],
            "controlnet": null, "width": 512, "height": 768, "output_format": "webp", "save_dir": "/o",
        }),
        json!({"base": "/m", "prompt": "x", "num_inference_steps": 9, "high_noise_frac": 0.5}),
        json!({"model_path": "/m", "prompt": "x"}),
        json!({"model": "/m", "width": 512}),
        json!({"prompt": "x"}),
        json!({"prompt": ""}),
        json!({"model": "/m", "prompt": "x", "widht": 512}),
        json!({"model": "/m", "prompt": "x", "steps": "many", "guidance_scale": "high"}),
        json!({"model": "/m", "prompt": "x", "steps": 30.0}),
        json!({"model": "/m", "prompt": "x", "steps": 30.5}),
        json!({"model": "/m", "prompt": "x", "steps": true}),
        json!({"model": "/m", "prompt": "x", "width": 70, "height": 4096}),
        json!({"model": "/m", "prompt": "x", "width": 56}),
        json!({"model": "/m", "prompt": "x", "width": 2048, "height": 64}),
        json!({"model": "/m", "prompt": "x", "seed": 18446744073709551615u64}),
        json!({"model": "/m", "prompt": "x", "seed": -1}),
        json!({"model": "/m", "prompt": "x", "seed": null}),
        json!({"model": "/m", "prompt": "x", "refiner_fraction": 0}),
        json!({"model": "/m", "prompt": "x", "refiner_fraction": 1}),
        json!({"model": "/m", "prompt": "x", "scheduler": "Euler b"}),
        json!({"model": "/m", "prompt": "x", "output_format": "jpg"}),
        json!({"model": "/m", "prompt": "x", "loras": [{"path": ""}, {"weight": 9}, {"path": "/l", "rank": 4}]}),
        json!({"model": "/m", "prompt": "x", "controlnet": {}}),
        json!({"model": "/m", "prompt": "x", "controlnet": {"type": "canny", "conditioning_scale": 5}}),
        json!({"model": "/m", "prompt": "x", "controlnet_type": "canny", "controlnet_model": "/c",
               "controlnet_image": 0, "controlnet_conditioning_scale": 0.8,
               "control_guidance_start": 0.1, "control_guidance_end": 0.9}),
        json!({"model": "/m", "prompt": "x", "controlnet_type": "depth", "controlnet_model": "/c",
               "controlnet_image": "/maps/d.png", "controlnet_preprocess": false,
               "controlnet_low_threshold": 50, "controlnet_high_threshold": 150}),
        json!({"model": "/m", "prompt": "x", "controlnet_type": "canny"}),
        json!({"model": "/m", "prompt": "x", "controlnet": {"type": "canny"}, "controlnet_type": "depth"}),
        json!({"model": "/m", "prompt": "x", "controlnet": null, "controlnet_type": "canny"}),
        json!({"model": "/m", "prompt": "x", "steps": 9, "num_inference_steps": 9}),
        json!({"model": "/m", "base": "/n", "prompt": "x"}),
        json!({"model": {"base": "/m"}, "prompt": "x"}),
        json!({"model": 5, "prompt": "x"}),
        json!({"model": "", "prompt": "x", "vae": ""}),
        with("extra", json!(1)),
        with("model", json!({"base": "/m", "colour": "red"})),
        with("model", json!({})),
        with("model", json!(null)),
        with("scheduler", json!({"type": "UniPC", "steps": 201})),
        with(
            "hyperparameters",
            json!({"num_images": 0, "guidance_scale": 50.5}),
        ),
        with("dimensions", json!({"width": "1024"})),
        with("output", json!({"format": "gif", "save_dir": ""})),
        // Prompts are bounded at 8192 characters (not bytes), paths at 4096.
        json!({"model": "/m", "prompt": "é".repeat(8192), "negative_prompt": "n".repeat(8192)}),
        json!({"model": "/m", "prompt": "x".repeat(8193)}),
        json!({"model": "/m", "prompt": "x", "negative_prompt": "🦊".repeat(8193)}),
        json!({"model": "/m".repeat(2049), "prompt": "x", "save_dir": "o".repeat(4097),
               "loras": [{"path": "l".repeat(4097)}], "controlnet_type": "depth",
               "controlnet_model": "/c", "controlnet_image": "i".repeat(4097)}),
        json!({"model": {"base": "/m"}}),
        json!({}),
        json!([1, 2]),
        json!("a fox"),
        json!(null),
    ]
    .into_iter()
    // The old system's shapes (the direct protocol, the C# request), shared with the
    // worker's own tests.
    .chain(legacy_cases())
    .collect()
}

fn legacy_cases() -> Vec<Value> {
    let text = std::fs::read_to_string(
        common::repo_root().join("workers/tests/fixtures/sdxl_legacy_requests.json"),
    )
    .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let mut cases: Vec<Value> = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request"].clone())
        .collect();
    cases.extend([
        json!({"Model": "/m", "Conditioning": {"Prompt": "x"}, "Dimensions": {"Width": 70}}),
        json!({"Model": {"Base": "/m", "Colour": 1}, "Conditioning": {"Prompt": "x"}}),
        json!({"prompt": "x", "model": "/m", "hyperparameters": {"nope": 1}}),
        json!({"prompt": "x", "model": "/m", "dimensions": "512x512", "width": 512}),
    ]);
    cases
}

/// An interpreter with `jsonschema`: `$FERRY_ML_PYTHON` (what `scripts/test` exports), else
/// `python3`. `None` (after saying why) when there is none, a failure under
/// `FERRY_REQUIRE_PYTHON=1`.
/// The SDK's and the SDXL package's sources, for a `PYTHONPATH`.
fn workers_path() -> std::ffi::OsString {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../workers"));
    std::env::join_paths([root.join("ml"), root.join("python")]).unwrap()
}

fn python_with_jsonschema() -> Option<String> {
    let python = std::env::var("FERRY_ML_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import jsonschema, ferry_sdxl.request"])
        .env("PYTHONPATH", workers_path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!("{python} cannot import jsonschema and ferry_sdxl");
    if std::env::var("FERRY_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("the flat form against request.py: {why}");
    }
    eprintln!("SKIPPED the flat form against request.py: {why}");
    None
}

#[test]
fn flat_form_and_validation_agree_with_the_python_worker() {
    let Some(python) = python_with_jsonschema() else {
        return;
    };
    let cases = cases();
    let mut child = Command::new(python)
        .args(["-c", PYTHON])
        .env("PYTHONPATH", workers_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases.clone()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), cases.len());

    for (case, py) in cases.iter().zip(&answers) {
        let object = case.as_object();
        let flat = object.is_some_and(ferry_server::sdxl::flat::is_flat);
        assert_eq!(Value::Bool(flat), py["flat"], "is_flat of {case}");
        if flat {
            match ferry_server::sdxl::flat::to_nested(object.unwrap()) {
                Ok(nested) => assert_eq!(Value::Object(nested), py["nested"], "{case}"),
                Err(e) => assert_eq!(e.keys(), [py["unknown"].as_str().unwrap()], "{case}"),
            }
        }
        let report = ferry_server::sdxl::validate(case).unwrap();
        assert_eq!(
            report.normalized.clone().unwrap_or_default(),
            py["normalized"],
            "validity and normal form of {case}: {report:?}"
        );
        assert_eq!(report.valid, !py["normalized"].is_null(), "{case}");
        if let Some(fields) = py.get("fields") {
            let ours: Vec<&str> = report.errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(Value::from(ours), *fields, "error fields of {case}");
        }
    }
}
