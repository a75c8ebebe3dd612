//! The host driving the SDXL worker (`python -m ferry_sdxl.main --worker pipeline_manager`,
//! `workers/ml/ferry_sdxl/`) end to end: a tiny SDXL pipeline with random weights is
//! built in the set-up (`python -m ferry_sdxl.tiny`), and a generation over every
//! transport this build has must answer a PNG of the requested size with a progress event
//! per step; a cancel at step 1 of 50 must stop a generation.
//!
//! Needs the ML environment (`scripts/ml-env`, torch and diffusers), found as
//! `$FERRY_ML_PYTHON`. Without it these tests print a notice and pass as skipped;
//! `FERRY_REQUIRE_PYTHON=1` (as `scripts/test` sets) makes its absence a failure.

use crate::common;

use common::with_watchdog;
use ferry::codec::{Codec, CodecKind, DEFAULT_MAX_FRAME};
use ferry::protocol::{Envelope, ErrorCode};
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A hang guard only, never a timing assertion: loading torch and the pipeline takes seconds
/// per worker, and far longer on a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(900);

pub(crate) fn ml_python_or_skip(what: &str) -> Option<PathBuf> {
    // Looked up once per test process: the check imports torch and diffusers, seconds of
    // CPU that every ML test of this binary would otherwise pay again.
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(find_ml_python).clone();
    match found {
        Ok(p) => Some(p),
        Err(why) if std::env::var("FERRY_REQUIRE_PYTHON").as_deref() == Ok("1") => {
            panic!("{what}: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {what}: {why}");
            None
        }
    }
}

/// `$FERRY_ML_PYTHON` when it can import the SDK, the SDXL package, torch and diffusers.
fn find_ml_python() -> Result<PathBuf, String> {
    match std::env::var_os("FERRY_ML_PYTHON") {
        None => {
            Err("FERRY_ML_PYTHON is unset (scripts/test sets it up with scripts/ml-env)".into())
        }
        Some(p) => {
            let python = PathBuf::from(p);
            match Command::new(&python)
                .args([
                    "-c",
                    "import ferry_worker._native, ferry_sdxl, torch, diffusers",
                ])
                .output()
            {
                Ok(out) if out.status.success() => Ok(python),
                Ok(out) => Err(format!(
                    "{} cannot import ferry_worker, ferry_sdxl, torch and diffusers: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(format!("cannot run {}: {e}", python.display())),
            }
        }
    }
}

/// Builds the tiny pipeline into `dir/base` and returns its path.
fn tiny_pipeline(python: &Path, dir: &Path) -> PathBuf {
    let base = dir.join("base");
    let out = Command::new(python)
        .args(["-m", "ferry_sdxl.tiny"])
        .arg(&base)
        .output()
        .expect("run ferry_sdxl.tiny");
    assert!(
        out.status.success(),
        "building the tiny pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    base
}

/// The SDXL worker over `transport`, with `models` (where the tiny pipeline is) as its models
/// root: the worker loads models from its roots only.
fn spawn(python: &Path, transport: TransportKind, models: &Path) -> WorkerProcess {
    WorkerProcess::spawn(sdxl_spec(python, transport, models))
        .unwrap_or_else(|e| panic!("sdxl worker over {transport} starts: {e}"))
}

fn sdxl_spec(python: &Path, transport: TransportKind, models: &Path) -> WorkerSpec {
    let mut spec = WorkerSpec::new(
        "sdxl",
        python.display().to_string(),
        [
            "-m",
            "ferry_sdxl.main",
            "--worker",
            "pipeline_manager",
            "--log-level",
            "INFO",
        ],
    );
    spec.worker_id = format!("py-sdxl-{transport}");
    spec.transport = transport;
    spec.codec = CodecKind::ALL
        .into_iter()
        .find(|c| Codec::new(*c, transport.framing(), DEFAULT_MAX_FRAME).is_ok())
        .expect("a codec for the transport");
    spec.env.push(("FERRY_ML_DEVICE".into(), "cpu".into()));
    spec.env
        .push(("FERRY_ML_MODELS".into(), models.display().to_string()));
    // `ready` follows the import of torch and diffusers: seconds, more on a busy machine.
    spec.startup_timeout = Duration::from_secs(300);
    // So is tearing them down at exit: the clean-exit check must not race a SIGTERM on a
    // loaded machine (the default 5 s grace was seen running out beside other builds).
    spec.shutdown_grace = Duration::from_secs(120);
    spec
}

fn request(base: &Path, steps: u32) -> Value {
    json!({
        "model": {"base": base},
        "scheduler": {"type": "Euler", "steps": steps},
        "hyperparameters": {"guidance_scale": 5.0, "seed": 11},
        "conditioning": {"prompt": "a cat"},
        "dimensions": {"width": 96, "height": 64}
    })
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn generation_answers_a_png_with_progress_per_step_over_every_transport() {
    let Some(python) = ml_python_or_skip("sdxl generation") else {
        return;
    };
    with_watchdog(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        let base = tiny_pipeline(&python, dir.path());
        for transport in TransportKind::ALL {
            let mut w = spawn(&python, transport, dir.path());
            let mut steps = Vec::new();
            let reply = w
                .call("inference.generate", request(&base, 3), |e| {
                    let data = e.data.as_ref().unwrap();
                    if e.event_name.as_deref() == Some("progress") && data["stage"] == "inference" {
                        steps.push(data["message"].clone());
                    }
                })
                .unwrap_or_else(|e| panic!("{transport}: generation failed: {e}"));
            assert_eq!(
                steps,
                vec!["step 1/3", "step 2/3", "step 3/3"],
                "{transport}"
            );
            assert_eq!(reply.attachments.len(), 1, "{transport}");
            assert_eq!(png_size(&reply.attachments[0]), (96, 64), "{transport}");
            assert_eq!(reply.data["images"][0]["seed"], 11, "{transport}");
            let status = w.shutdown().expect("shutdown");
            assert!(status.success(), "{transport}: clean exit, got {status}");
        }
    });
}

#[test]
fn cancel_at_step_1_of_50_stops_the_generation() {
    let Some(python) = ml_python_or_skip("sdxl cancel") else {
        return;
    };
    with_watchdog(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        let base = tiny_pipeline(&python, dir.path());
        let mut w = spawn(&python, TransportKind::ALL[0], dir.path());
        // One measured 1-step generation (after one that loads the model) sizes a timeout
        // that lands a few steps into a 50-step generation.
        let big = |steps: u32| {
            let mut r = request(&base, steps);
            r["dimensions"] = json!({"width": 128, "height": 128});
            r
        };
        let started = Instant::now();
        w.call("inference.generate", big(1), |_| {})
            .expect("warm-up");
        let step = started.elapsed();
        w.call("inference.generate", big(1), |_| {})
            .expect("warm-up");
        let step = step.min(started.elapsed() - step);
        let mut seen = 0;
        let err = w
            .call_with(
                Envelope::request("", "inference.generate", big(50)),
                &[],
                &CallOptions::default().timeout(step * 3),
                |_| seen += 1,
            )
            .expect_err("a 50-step generation cannot finish in the time of 3 steps");
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        // The timeout sends a cancel, which the handler sees at its next step; had it not,
        // `status` would wait for the 50 steps and count a third generation.
        let status = w.call("status", json!(null), |_| {}).expect("status");
        assert_eq!(status.data["inference"]["running"], Value::Null);
        assert_eq!(status.data["inference"]["generated"], 2);
        assert!(seen < 50, "{seen} progress events: the generation ran on");
        let exit = w.shutdown().expect("shutdown");
        assert!(exit.success(), "clean exit, got {exit}");
    });
}

/// A pool of the SDXL worker with a device list: the worker runs on the device the pool
/// assigned (`FERRY_DEVICE`, over the spec's own `FERRY_ML_DEVICE`), reports its stages, and
/// its `status_change` events become the pool's lifecycle events (what `/api/events`
/// streams) and its telemetry in the pool's status (what `/api/workers/status` and
/// `/metrics` show).
#[test]
fn a_pooled_generation_reports_device_stages_and_status_changes() {
    let Some(python) = ml_python_or_skip("sdxl status changes through a pool") else {
        return;
    };
    with_watchdog(LIMIT, move || {
        use ferry::pool::{LifecycleKind, Pool, PoolConfig};
        let dir = tempfile::tempdir().unwrap();
        let base = tiny_pipeline(&python, dir.path());
        let mut spec = sdxl_spec(&python, TransportKind::Stdio, dir.path());
        // What the pool assigns must win: a worker on this would fail (no such device).
        spec.env.retain(|(k, _)| k != "FERRY_ML_DEVICE");
        spec.env.push(("FERRY_ML_DEVICE".into(), "cuda:5".into()));
        // As ferry.toml's sdxl pool: loading a pipeline answers no health probe meanwhile.
        let mut config = PoolConfig::default()
            .devices(["cpu"])
            .request_timeout(Duration::from_secs(600));
        config.health_timeout = Duration::from_secs(600);
        let pool = Pool::start(spec, config).unwrap();
        let mut events = pool.events();
        let mut stages = Vec::new();
        let reply = pool
            .call(
                Envelope::request("", "inference.generate", request(&base, 2)),
                &[],
                |e| {
                    if e.event_name.as_deref() == Some("progress") {
                        let stage = e.data.as_ref().unwrap()["stage"].as_str().unwrap();
                        if stages.last().map(String::as_str) != Some(stage) {
                            stages.push(stage.to_owned());
                        }
                    }
                },
            )
            .expect("generation");
        assert_eq!(
            stages,
            ["initialization", "loading", "inference", "postprocessing"]
        );
        let metrics = &reply.data["metrics"];
        assert_eq!(metrics["device"], "cpu", "{metrics}");
        assert!(
            metrics["memory_usage_mb"]
                .as_f64()
                .is_some_and(|mb| mb > 0.0),
            "{metrics}"
        );
        assert!(metrics.get("gpu_utilization").is_none(), "{metrics}");

        let mut changes = Vec::new();
        while let Ok(e) = events.try_recv() {
            if e.kind == LifecycleKind::StatusChange {
                changes.push(e);
            }
        }
        let statuses: Vec<&str> = changes.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(statuses, ["busy", "loading", "idle"]);
        let worker = &pool.status()[0];
        for e in &changes {
            assert_eq!(e.worker_id, worker.id);
            assert_eq!((e.pid, e.device.as_deref()), (worker.pid, Some("cpu")));
            let data = e.data.as_ref().unwrap();
            assert!(data.memory_usage_mb.is_some_and(|mb| mb > 0.0), "{e:?}");
            assert_eq!(data.gpu_utilization, None);
        }
        assert_eq!(worker.device.as_deref(), Some("cpu"));
        let telemetry = worker.telemetry.as_ref().expect("telemetry reported");
        assert_eq!(telemetry.status.as_deref(), Some("idle"));
        assert_eq!(telemetry.device.as_deref(), Some("cpu"));
        assert!(telemetry.memory_usage_mb.is_some_and(|mb| mb > 0.0));
        pool.shutdown();
    });
}
