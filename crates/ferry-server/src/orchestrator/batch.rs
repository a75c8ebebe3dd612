//! Batches: many items of one operation or workflow, with bounded parallelism.

use super::session::{run_workflow, Flag, WorkflowEnd};
use super::Orchestrator;
use base64::Engine as _;
use ferry::protocol::{Envelope, ErrorBody, ErrorCode, Priority};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

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

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// One batch.
pub struct Batch {
    id: String,
    spec: BatchSpec,
    items: Mutex<Vec<BatchItemStatus>>,
    status: Mutex<BatchStatus>,
    cancels: Vec<watch::Sender<Flag>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn status_name(s: ItemStatus) -> &'static str {
    match s {
        ItemStatus::Pending => "pending",
        ItemStatus::Running => "running",
        ItemStatus::Completed => "completed",
        ItemStatus::Failed => "failed",
        ItemStatus::Cancelled => "cancelled",
    }
}

impl Batch {
    pub(crate) fn new(id: String, spec: BatchSpec) -> Arc<Batch> {
        let n = spec.items.len();
        Arc::new(Batch {
            id,
            items: Mutex::new(
                (0..n)
                    .map(|index| BatchItemStatus {
                        index,
                        status: ItemStatus::Pending,
                        result: None,
                        result_attachments: Vec::new(),
                        error: None,
                    })
                    .collect(),
            ),
            status: Mutex::new(BatchStatus::Pending),
            cancels: (0..n).map(|_| watch::channel(Flag::Run).0).collect(),
            started: AtomicBool::new(false),
            spec,
        })
    }

    /// The batch id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether every item has ended.
    pub fn is_finished(&self) -> bool {
        matches!(
            *self.status.lock(),
            BatchStatus::Completed | BatchStatus::Cancelled
        )
    }

    /// A snapshot.
    pub fn view(&self) -> BatchView {
        let items = self.items.lock().clone();
        let mut counts = std::collections::BTreeMap::new();
        for s in ["pending", "running", "completed", "failed", "cancelled"] {
            counts.insert(s, 0);
        }
        for i in &items {
            *counts.entry(status_name(i.status)).or_insert(0) += 1;
        }
        let ended = items
            .iter()
            .filter(|i| {
                matches!(
                    i.status,
                    ItemStatus::Completed | ItemStatus::Failed | ItemStatus::Cancelled
                )
            })
            .count();
        BatchView {
            id: self.id.clone(),
            status: *self.status.lock(),
            progress: if items.is_empty() {
                1.0
            } else {
                ended as f64 / items.len() as f64
            },
            counts,
            items,
        }
    }

    /// Cancels the given items (all when `None`); running ones have their request cancelled.
    pub fn cancel(&self, indices: Option<&[usize]>) {
        let all: Vec<usize> = (0..self.cancels.len()).collect();
        let chosen = indices.unwrap_or(&all);
        for &i in chosen {
            if let Some(tx) = self.cancels.get(i) {
                tx.send_replace(Flag::Cancel);
            }
            let mut items = self.items.lock();
            if let Some(item) = items.get_mut(i) {
                if item.status == ItemStatus::Pending {
                    item.status = ItemStatus::Cancelled;
                }
            }
        }
        if indices.is_none() {
            let mut status = self.status.lock();
            if *status == BatchStatus::Pending {
                *status = BatchStatus::Cancelled;
            }
        }
    }

    /// Starts running the items. Refused if it was started before.
    pub fn execute(
        self: &Arc<Self>,
        orch: Arc<Orchestrator>,
    ) -> Result<(), super::OrchestratorError> {
        if self.started.swap(true, Ordering::Relaxed) || *self.status.lock() != BatchStatus::Pending
        {
            return Err(super::OrchestratorError::InvalidState(format!(
                "batch `{}` was already executed or cancelled",
                self.id
            )));
        }
        *self.status.lock() = BatchStatus::Running;
        let batch = self.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(batch.spec.parallelism));
            let mut tasks = Vec::new();
            for index in 0..batch.spec.items.len() {
                let (batch, orch, permits) = (batch.clone(), orch.clone(), permits.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    batch.run_item(&orch, index).await;
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let all_cancelled = batch
                .items
                .lock()
                .iter()
                .all(|i| i.status == ItemStatus::Cancelled);
            *batch.status.lock() = if all_cancelled && !batch.spec.items.is_empty() {
                BatchStatus::Cancelled
            } else {
                BatchStatus::Completed
            };
        });
        Ok(())
    }

    fn set(
        &self,
        index: usize,
        status: ItemStatus,
        result: Option<Value>,
        error: Option<ErrorBody>,
    ) {
        self.set_with(index, status, result, Vec::new(), error);
    }

    fn set_with(
        &self,
        index: usize,
        status: ItemStatus,
        result: Option<Value>,
        attachments: Vec<Vec<u8>>,
        error: Option<ErrorBody>,
    ) {
        if let Some(item) = self.items.lock().get_mut(index) {
            item.status = status;
            item.result = result;
            item.result_attachments = attachments
                .iter()
                .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                .collect();
            item.error = error;
        }
    }

    async fn run_item(&self, orch: &Orchestrator, index: usize) {
        let mut ctl = self.cancels[index].subscribe();
        if *ctl.borrow_and_update() == Flag::Cancel {
            self.set(index, ItemStatus::Cancelled, None, None);
            return;
        }
        self.set(index, ItemStatus::Running, None, None);
        let input = &self.spec.items[index];
        let outcome = match &self.spec.target {
            BatchTarget::Operation {
                worker_type,
                operation,
            } => {
                let mut request = Envelope::request("", operation.clone(), input.clone());
                request.priority = self.spec.priority;
                let call = orch.call(worker_type, request, Vec::new(), |_| {});
                let cancelled = async {
                    while *ctl.borrow_and_update() != Flag::Cancel {
                        if ctl.changed().await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    r = call => r
                        .map(|resp| (resp.data, resp.attachments))
                        .map_err(|e| WorkflowEnd::Failed(e.to_body())),
                    () = cancelled => Err(WorkflowEnd::Cancelled),
                }
            }
            BatchTarget::Workflow { workflow } => match orch.workflow(workflow) {
                Ok(wf) => {
                    run_workflow(
                        orch,
                        &wf,
                        input,
                        self.spec.priority,
                        &mut ctl,
                        |_| {},
                        |_| {},
                    )
                    .await
                }
                Err(e) => Err(WorkflowEnd::Failed(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    e.to_string(),
                ))),
            },
        };
        match outcome {
            Ok((data, attachments)) => {
                self.set_with(index, ItemStatus::Completed, Some(data), attachments, None)
            }
            Err(WorkflowEnd::Cancelled) => self.set(
                index,
                ItemStatus::Cancelled,
                None,
                Some(ErrorBody::new(ErrorCode::Cancelled, "item cancelled")),
            ),
            Err(WorkflowEnd::Failed(body)) => self.set(index, ItemStatus::Failed, None, Some(body)),
        }
    }
}
