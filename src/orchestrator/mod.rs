//! Workflows, sessions and batches over the worker pools.
//!
//! Everything runs through the pools: a workflow step is a pool call, a batch item is a
//! pool call or a workflow run. Sessions (workflow runs) and batches live in memory and
//! are controlled through this type (the HTTP API is a thin layer over it).

mod batch;
mod error;
mod metrics;
mod session;
mod template;

pub use batch::{
    Batch, BatchItemStatus, BatchSpec, BatchStatus, BatchTarget, BatchView, ItemStatus,
};
pub use error::OrchestratorError;
pub use metrics::{known_operations, Metrics};
pub use session::{Control, Session, SessionStatus, SessionView, StepRecord};

use crate::config::{FerryConfig, WorkflowConfig};
use crate::pool::{Pool, WorkerStatus};
use crate::protocol::Envelope;
use crate::worker::{CallOptions, Response};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The orchestration core.
pub struct Orchestrator {
    pools: BTreeMap<String, Arc<Pool>>,
    workflows: RwLock<BTreeMap<String, WorkflowConfig>>,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    batches: Mutex<BTreeMap<String, Arc<Batch>>>,
    metrics: Metrics,
    next_id: AtomicU64,
    keep_finished: usize,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("worker_types", &self.pools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Starts a pool per configured worker type (blocking until each has tried its
    /// `min_workers`).
    pub fn start(config: &FerryConfig) -> Result<Arc<Self>, OrchestratorError> {
        let mut pools = BTreeMap::new();
        for (name, w) in &config.workers {
            let pool = Pool::start(w.spec(name), w.pool.clone())
                .map_err(|e| OrchestratorError::Pool(name.clone(), e))?;
            pools.insert(name.clone(), Arc::new(pool));
        }
        Ok(Self::with_pools(pools, config))
    }

    /// An orchestrator over pools started elsewhere.
    pub fn with_pools(pools: BTreeMap<String, Arc<Pool>>, config: &FerryConfig) -> Arc<Self> {
        Arc::new(Orchestrator {
            pools,
            workflows: RwLock::new(
                config
                    .workflows
                    .iter()
                    .map(|w| (w.id.clone(), w.clone()))
                    .collect(),
            ),
            sessions: Mutex::new(BTreeMap::new()),
            batches: Mutex::new(BTreeMap::new()),
            metrics: Metrics::new(metrics::known_operations(config)),
            next_id: AtomicU64::new(1),
            keep_finished: config.server.keep_finished,
        })
    }

    fn new_id(&self, prefix: &str) -> String {
        // Uniqueness only.
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The configured worker types.
    pub fn worker_types(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// The pool of `worker_type`.
    pub fn pool(&self, worker_type: &str) -> Result<&Arc<Pool>, OrchestratorError> {
        self.pools
            .get(worker_type)
            .ok_or_else(|| OrchestratorError::UnknownWorkerType(worker_type.to_owned()))
    }

    /// Calls `operation` on a worker of `worker_type`; events reach `on_event`.
    pub async fn call(
        &self,
        worker_type: &str,
        request: Envelope,
        attachments: Vec<Vec<u8>>,
        on_event: impl FnMut(&Envelope) + Send,
    ) -> Result<Response, OrchestratorError> {
        let pool = self.pool(worker_type)?;
        let operation = request.operation.clone().unwrap_or_default();
        let started = Instant::now();
        let result = pool
            .call_async(request, attachments, CallOptions::default(), on_event)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code().as_str(),
        };
        let transport = pool_transport(pool);
        self.metrics.record(
            worker_type,
            &operation,
            transport,
            outcome,
            started.elapsed(),
        );
        result.map_err(|e| OrchestratorError::Pool(worker_type.to_owned(), e))
    }

    /// Every worker of every type.
    pub fn worker_status(&self) -> Vec<WorkerStatus> {
        self.pools.values().flat_map(|p| p.status()).collect()
    }

    /// Restarts worker `id` (of any type).
    pub fn restart_worker(&self, id: &str) -> Result<(), OrchestratorError> {
        if self.pools.values().any(|p| p.restart(id)) {
            Ok(())
        } else {
            Err(OrchestratorError::NotFound(format!("worker `{id}`")))
        }
    }

    /// Whether every worker type has a ready worker.
    pub fn is_ready(&self) -> bool {
        self.pools.values().all(|p| p.is_ready())
    }

    /// Readiness per worker type.
    pub fn readiness(&self) -> BTreeMap<String, bool> {
        self.pools
            .iter()
            .map(|(n, p)| (n.clone(), p.is_ready()))
            .collect()
    }

    /// Prometheus text: request series, queue depth, workers, restarts.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        self.metrics.render(&mut out);
        out.push_str("# HELP ferry_queue_depth Callers waiting for a worker.\n# TYPE ferry_queue_depth gauge\n");
        for (name, p) in &self.pools {
            let _ = writeln!(
                out,
                "ferry_queue_depth{{worker_type=\"{name}\"}} {}",
                p.queue_depth()
            );
        }
        // One status snapshot per pool, so both families describe the same moment.
        let statuses: Vec<_> = self.pools.iter().map(|(n, p)| (n, p.status())).collect();
        // Each family's samples directly follow its own HELP and TYPE lines.
        out.push_str("# HELP ferry_workers_ready Workers ready to serve.\n# TYPE ferry_workers_ready gauge\n");
        for (name, status) in &statuses {
            let ready = status
                .iter()
                .filter(|s| s.state == crate::pool::WorkerState::Ready)
                .count();
            let _ = writeln!(out, "ferry_workers_ready{{worker_type=\"{name}\"}} {ready}");
        }
        out.push_str("# HELP ferry_worker_restarts_total Worker restarts.\n# TYPE ferry_worker_restarts_total counter\n");
        for (name, status) in &statuses {
            let restarts: u64 = status.iter().map(|s| u64::from(s.restarts)).sum();
            let _ = writeln!(
                out,
                "ferry_worker_restarts_total{{worker_type=\"{name}\"}} {restarts}"
            );
        }
        out
    }

    /// The workflows.
    pub fn workflows(&self) -> Vec<WorkflowConfig> {
        self.workflows.read().values().cloned().collect()
    }

    /// One workflow.
    pub fn workflow(&self, id: &str) -> Result<WorkflowConfig, OrchestratorError> {
        self.workflows
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::NotFound(format!("workflow `{id}`")))
    }

    /// Adds (or replaces) a workflow after checking it against the worker types.
    pub fn put_workflow(&self, workflow: WorkflowConfig) -> Result<(), OrchestratorError> {
        let probe = FerryConfig {
            server: Default::default(),
            workers: self
                .pools
                .keys()
                .map(|k| (k.clone(), placeholder_worker()))
                .collect(),
            workflows: vec![workflow.clone()],
        };
        let text =
            toml::to_string(&probe).map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
        FerryConfig::parse(&text, "workflow").map_err(|e| {
            OrchestratorError::Invalid(format!(
                "{}: {}",
                e.key.trim_start_matches("workflows.0."),
                e.reason
            ))
        })?;
        self.workflows.write().insert(workflow.id.clone(), workflow);
        Ok(())
    }

    /// Starts a session running workflow `id` on `input`.
    pub fn execute_workflow(
        self: &Arc<Self>,
        id: &str,
        input: serde_json::Value,
    ) -> Result<Arc<Session>, OrchestratorError> {
        let workflow = self.workflow(id)?;
        let session = Session::start(self.clone(), self.new_id("s"), workflow, input);
        let mut sessions = self.sessions.lock();
        prune(&mut sessions, self.keep_finished, |s| s.is_finished());
        sessions.insert(session.id().to_owned(), session.clone());
        Ok(session)
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// One session.
    pub fn session(&self, id: &str) -> Result<Arc<Session>, OrchestratorError> {
        self.sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::NotFound(format!("session `{id}`")))
    }

    /// Cancels and forgets a session.
    pub fn delete_session(&self, id: &str) -> Result<(), OrchestratorError> {
        let session = self
            .sessions
            .lock()
            .remove(id)
            .ok_or_else(|| OrchestratorError::NotFound(format!("session `{id}`")))?;
        let _ = session.control(Control::Cancel);
        Ok(())
    }

    /// Creates a batch (pending until executed).
    pub fn create_batch(
        self: &Arc<Self>,
        spec: BatchSpec,
    ) -> Result<Arc<Batch>, OrchestratorError> {
        match &spec.target {
            BatchTarget::Operation { worker_type, .. } => {
                self.pool(worker_type)?;
            }
            BatchTarget::Workflow { workflow } => {
                self.workflow(workflow)?;
            }
        }
        if spec.parallelism == 0 {
            return Err(OrchestratorError::Invalid(
                "parallelism must be at least 1".into(),
            ));
        }
        let batch = Batch::new(self.new_id("b"), spec);
        let mut batches = self.batches.lock();
        prune(&mut batches, self.keep_finished, |b| b.is_finished());
        batches.insert(batch.id().to_owned(), batch.clone());
        Ok(batch)
    }

    /// Every batch.
    pub fn batches(&self) -> Vec<Arc<Batch>> {
        self.batches.lock().values().cloned().collect()
    }

    /// One batch.
    pub fn batch(&self, id: &str) -> Result<Arc<Batch>, OrchestratorError> {
        self.batches
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::NotFound(format!("batch `{id}`")))
    }

    /// Cancels and forgets a batch.
    pub fn delete_batch(&self, id: &str) -> Result<(), OrchestratorError> {
        let batch = self
            .batches
            .lock()
            .remove(id)
            .ok_or_else(|| OrchestratorError::NotFound(format!("batch `{id}`")))?;
        batch.cancel(None);
        Ok(())
    }

    /// Stops every pool gracefully (blocking).
    pub fn shutdown(&self) {
        for s in self.sessions.lock().values() {
            let _ = s.control(Control::Cancel);
        }
        for b in self.batches.lock().values() {
            b.cancel(None);
        }
        let handles: Vec<_> = self
            .pools
            .values()
            .map(|p| {
                let p = p.clone();
                std::thread::spawn(move || p.shutdown())
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn pool_transport(pool: &Pool) -> &'static str {
    pool.transport().as_str()
}

fn placeholder_worker() -> crate::config::WorkerTypeConfig {
    crate::config::WorkerTypeConfig {
        command: "x".into(),
        args: Vec::new(),
        env: Default::default(),
        cwd: None,
        transport: Default::default(),
        codec: Default::default(),
        dialect: Default::default(),
        startup_timeout_ms: 1,
        shutdown_grace_ms: 1,
        max_frame: 1 << 20,
        socket_dir: None,
        abstract_socket: false,
        tcp_listen: None,
        tcp_advertise: None,
        token: None,
        shm_capacity: None,
        shm_wait: Default::default(),
        shm_spin_us: None,
        shm_yield_us: None,
        shm_send_timeout_ms: None,
        pool: Default::default(),
    }
}

/// Drops the oldest finished entries beyond `keep`.
fn prune<T>(map: &mut BTreeMap<String, Arc<T>>, keep: usize, finished: impl Fn(&T) -> bool) {
    let done: Vec<String> = map
        .iter()
        .filter(|(_, v)| finished(v))
        .map(|(k, _)| k.clone())
        .collect();
    if done.len() > keep {
        for k in done.iter().take(done.len() - keep) {
            map.remove(k);
        }
    }
}
