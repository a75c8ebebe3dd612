//! The public types the HTTP API reads from JSON bodies, through `serde_json::from_slice`
//! as axum's `Json` does: `BatchSpec` (`POST /api/processing/batches`), `WorkflowConfig`
//! (`POST /api/processing/workflows`) and `Control` (the `action` of
//! `POST /api/processing/sessions/{id}/control`). The first input byte picks the type.
//! (`InferenceRequest`, `ControlRequest` and `BatchCancel` live in the private
//! `api::handlers`; the `api_http` target reaches them through the router.)
//!
//! Checks: a parsed value survives a JSON round trip unchanged; `Control` parses exactly
//! from its four names; a workflow is refused by an orchestrator without worker types, and
//! judged by the same TOML round trip `Orchestrator::put_workflow` uses against a
//! configuration that has its worker types: when that configuration parses, the workflow
//! read back from TOML is the one that was sent (what is validated is what is stored).
#![no_main]

use ferry_server::config::{FerryConfig, WorkerTypeConfig, WorkflowConfig};
use ferry_server::orchestrator::{BatchSpec, Control, Orchestrator};
use ferry_server::state::StateStore;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

fn empty_config() -> FerryConfig {
    FerryConfig {
        server: Default::default(),
        workers: BTreeMap::new(),
        workflows: Vec::new(),
        limits: Default::default(),
        sdxl: Default::default(),
        state: Default::default(),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

/// One orchestrator with no worker types over an in-memory store for every input: nothing
/// can be created in it (batches and workflows are refused), so inputs cannot see each
/// other.
fn orchestrator() -> &'static Arc<Orchestrator> {
    static ORCH: OnceLock<Arc<Orchestrator>> = OnceLock::new();
    ORCH.get_or_init(|| {
        runtime().block_on(async {
            let store = StateStore::open_url("memory", "fuzz", 15_000)
                .await
                .expect("in-memory state store");
            Orchestrator::with_pools(BTreeMap::new(), &empty_config(), store)
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            let Ok(spec) = serde_json::from_slice::<BatchSpec>(body) else {
                return;
            };
            let text = serde_json::to_vec(&spec).unwrap();
            let back: BatchSpec = serde_json::from_slice(&text).expect("BatchSpec re-reads");
            assert_eq!(back, spec, "BatchSpec JSON round trip");
            assert!(
                runtime()
                    .block_on(orchestrator().create_batch(spec))
                    .is_err(),
                "a batch with no worker types"
            );
        }
        1 => {
            let Ok(wf) = serde_json::from_slice::<WorkflowConfig>(body) else {
                return;
            };
            let text = serde_json::to_vec(&wf).unwrap();
            let back: WorkflowConfig =
                serde_json::from_slice(&text).expect("WorkflowConfig re-reads");
            assert_eq!(back, wf, "WorkflowConfig JSON round trip");
            let refused = runtime().block_on(orchestrator().put_workflow(wf.clone()));
            assert!(refused.is_err(), "a workflow with no worker types");
            let _ = refused.map_err(|e| e.to_string());

            // put_workflow's judgement with the step's worker types configured.
            let placeholder: WorkerTypeConfig =
                serde_json::from_value(json!({"command": "x"})).unwrap();
            let mut probe = empty_config();
            for step in &wf.steps {
                probe
                    .workers
                    .insert(step.worker_type.clone(), placeholder.clone());
            }
            probe.workflows.push(wf.clone());
            let Ok(text) = toml::to_string(&probe) else {
                return;
            };
            if let Ok(parsed) = FerryConfig::parse(&text, "workflow") {
                assert_eq!(parsed.workflows.len(), 1);
                assert_eq!(
                    parsed.workflows[0], wf,
                    "the workflow validated (read back from TOML) is not the one stored\n{text}"
                );
            }
        }
        _ => {
            let parsed = serde_json::from_slice::<Control>(body);
            let value = serde_json::from_slice::<Value>(body);
            let named = match &value {
                Ok(Value::String(s)) => match s.as_str() {
                    "pause" => Some(Control::Pause),
                    "resume" => Some(Control::Resume),
                    "cancel" => Some(Control::Cancel),
                    "restart" => Some(Control::Restart),
                    _ => None,
                },
                _ => None,
            };
            assert_eq!(parsed.ok(), named, "Control from {value:?}");
        }
    }
});
