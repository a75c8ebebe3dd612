//! Batches: many items of one operation or workflow, with bounded parallelism.

//!
//! A batch lives in the state store: its items are claimed by whichever host has room
//! (leases, see [`crate::state`]), so several hosts share one batch and a dead host's
//! items are taken over.

use super::session::{run_workflow, Flag, Resume, WorkflowEnd};
use super::{Orchestrator, OrchestratorError};
use crate::state::{Claimed, StoredBatch};
use base64::Engine as _;
use ferry::protocol::{Envelope, ErrorBody, ErrorCode, Priority};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

/// What each item runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchTarget {
    /// One operation of one worker type per item.
    Operation {
        /// The worker type.
        worker_type: String,
        /// The operation.
        operation: String,
    },
    /// One workflow run per item.
    Workflow {
        /// The workflow id.
        workflow: String,
    },
}

/// A batch request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// What each item runs.
    #[serde(flatten)]
    pub target: BatchTarget,
    /// Each item's request data.
    pub items: Vec<Value>,
    /// Items running at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Priority of the items' requests.
    #[serde(default)]
    pub priority: Option<Priority>,
}

fn default_parallelism() -> usize {
    4
}

/// What a batch runs, as stored (its items are stored one by one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSpec {
    #[serde(flatten)]
    pub(crate) target: BatchTarget,
    #[serde(default)]
    pub(crate) priority: Option<Priority>,
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Created, not executed.
    Pending,
    /// Items are running.
    Running,
    /// Every item has ended (some may have failed or been cancelled).
    Completed,
    /// The whole batch was cancelled.
    Cancelled,
}

/// Where one item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting for its turn.
    Pending,
    /// Running.
    Running,
    /// Succeeded.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// It was running on a host that died, and its operation is not listed in
    /// `idempotent_operations`, so it was not run again.
    Interrupted,
}

/// One item's state and result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchItemStatus {
    /// Position in the batch.
    pub index: usize,
    /// Where it is.
    pub status: ItemStatus,
    /// Its output.
    pub result: Option<Value>,
    /// Its output's attachments (an SDXL item's images), base64, when completed.
    pub result_attachments: Vec<String>,
    /// Its error.
    pub error: Option<ErrorBody>,
}

/// A batch's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchView {
    /// Batch id.
    pub id: String,
    /// Where it is.
    pub status: BatchStatus,
    /// Items ended / total.
    pub progress: f64,
    /// Counts by item status.
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    /// Every item.
    pub items: Vec<BatchItemStatus>,
}

/// Whether an item status is an end.
fn ended(s: ItemStatus) -> bool {
    !matches!(s, ItemStatus::Pending | ItemStatus::Running)
}

fn status_name(s: ItemStatus) -> &'static str {
    match s {
        ItemStatus::Pending => "pending",
        ItemStatus::Running => "running",
        ItemStatus::Completed => "completed",
        ItemStatus::Failed => "failed",
        ItemStatus::Cancelled => "cancelled",
        ItemStatus::Interrupted => "interrupted",
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, OrchestratorError> {
    serde_json::from_str(text).map_err(|e| {
        OrchestratorError::State(crate::state::StateError::Corrupt(format!("{what}: {e}")))
    })
}

impl BatchView {
    /// The view of a stored batch.
    pub(crate) fn from_stored(b: StoredBatch) -> Result<BatchView, OrchestratorError> {
        let status: BatchStatus = parse("batch status", &format!("\"{}\"", b.status))?;
        let mut items = Vec::with_capacity(b.items.len());
        for i in b.items {
            items.push(BatchItemStatus {
                index: i.index,
                status: parse("item status", &format!("\"{}\"", i.status))?,
                result: i
                    .result
                    .as_deref()
                    .map(|r| parse("item result", r))
                    .transpose()?,
                result_attachments: i
                    .attachments
                    .iter()
                    .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                    .collect(),
                error: i
                    .error
                    .as_deref()
                    .map(|e| parse("item error", e))
                    .transpose()?,
            });
        }
        let mut counts = std::collections::BTreeMap::new();
        for s in [
            "pending",
            "running",
            "completed",
            "failed",
            "cancelled",
            "interrupted",
        ] {
            counts.insert(s, 0);
        }
        for i in &items {
            *counts.entry(status_name(i.status)).or_insert(0) += 1;
        }
        let done = items.iter().filter(|i| ended(i.status)).count();
        Ok(BatchView {
            id: b.id,
            status,
            progress: if items.is_empty() {
                1.0
            } else {
                done as f64 / items.len() as f64
            },
            counts,
            items,
        })
    }
}

/// Runs one claimed item and stores how it ended (unless its claim was lost meanwhile).
pub(crate) async fn run_claimed(
    orch: &Orchestrator,
    item: Claimed,
    mut ctl: watch::Receiver<Flag>,
) -> Result<(), OrchestratorError> {
    let store = orch.store();
    let spec: StoredSpec = parse("batch spec", &item.spec)?;
    let input: Value = parse("item input", &item.input)?;
    if item.was_running && !orch.target_is_idempotent(&spec.target) {
        let body = ErrorBody::new(
            ErrorCode::WorkerCrashed,
            format!(
                "interrupted: the host running this item stopped, and {} is not listed in \
                 `idempotent_operations`, so it was not run again",
                orch.target_operations(&spec.target)
            ),
        );
        store
            .finish_item(
                &item.batch_id,
                item.index,
                item.epoch,
                "interrupted",
                None,
                Some(&serde_json::to_string(&body)?),
                &[],
            )
            .await?;
        return Ok(());
    }
    let outcome = match &spec.target {
        BatchTarget::Operation {
            worker_type,
            operation,
        } => {
            let mut request = Envelope::request("", operation.clone(), input);
            request.priority = spec.priority;
            let call = orch.call(worker_type, request, Vec::new(), |_| {});
            let cancelled = super::session::wait_cancel(ctl.clone());
            tokio::select! {
                r = call => r
                    .map(|resp| (resp.data, resp.attachments))
                    .map_err(|e| WorkflowEnd::Failed(e.to_body())),
                () = cancelled => Err(WorkflowEnd::Cancelled),
            }
        }
        BatchTarget::Workflow { workflow } => match orch.workflow(workflow).await {
            Ok(wf) => {
                run_workflow(
                    orch,
                    &wf,
                    &input,
                    Resume::fresh(&input),
                    spec.priority,
                    &mut ctl,
                    |_| {},
                    |_| {},
                    // An item's workflow reruns whole after a crash: nothing to wait for.
                    |_| std::future::ready(()),
                )
                .await
            }
            Err(e) => Err(WorkflowEnd::Failed(ErrorBody::new(
                ErrorCode::InvalidRequest,
                e.to_string(),
            ))),
        },
    };
    if outcome.is_err() && orch.is_stopping() {
        // The pools are stopping under it: the item stays running in the store, and the
        // next start (or another host) takes it up.
        return Ok(());
    }
    let (status, result, error, attachments) = match outcome {
        Ok((data, atts)) => ("completed", Some(serde_json::to_string(&data)?), None, atts),
        Err(WorkflowEnd::Cancelled) => (
            "cancelled",
            None,
            Some(serde_json::to_string(&ErrorBody::new(
                ErrorCode::Cancelled,
                "item cancelled",
            ))?),
            Vec::new(),
        ),
        Err(WorkflowEnd::Failed(body)) => (
            "failed",
            None,
            Some(serde_json::to_string(&body)?),
            Vec::new(),
        ),
    };
    store
        .finish_item(
            &item.batch_id,
            item.index,
            item.epoch,
            status,
            result.as_deref(),
            error.as_deref(),
            &attachments,
        )
        .await?;
    Ok(())
}
