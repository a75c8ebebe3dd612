//! Workflows, sessions and batches over the worker pools.
//!
//! Everything runs through the pools: a workflow step is a pool call, a batch item is a
//! pool call or a workflow run. Sessions (workflow runs) and batches live in memory and
//! are controlled through this type (the HTTP API is a thin layer over it).

mod batch;
mod error;
mod metrics;
mod registry;
mod session;
mod template;

pub use batch::{
    Batch, BatchItemStatus, BatchSpec, BatchStatus, BatchTarget, BatchView, ItemStatus,
};
pub use error::OrchestratorError;
pub use metrics::{known_operations, Metrics};
pub use session::{Control, Session, SessionStatus, SessionView, StepRecord};

use crate::config::{FerryConfig, LimitsConfig, WorkerTypeConfig, WorkflowConfig};
use crate::sdxl;
use ferry::pool::{Pool, WorkerStatus};
use ferry::protocol::Envelope;
use ferry::worker::{CallOptions, Response};
use parking_lot::RwLock;
use registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The orchestration core.
pub struct Orchestrator {
    pools: BTreeMap<String, Arc<Pool>>,
    /// Each worker type's configuration: what HTTP clients may call on it.
    worker_configs: BTreeMap<String, WorkerTypeConfig>,
    workflows: RwLock<Workflows>,
    sessions: Registry<Session>,
    batches: Registry<Batch>,
    metrics: Metrics,
    next_id: AtomicU64,
    limits: LimitsConfig,
    /// The worker type of the SDXL routes (`server.sdxl_worker_type`).
    sdxl_worker_type: String,
    /// The style presets and the quality boost (`[sdxl]`).
    styles: sdxl::Styles,
}

/// The workflows: from the configuration file (trusted, fixed) and made through the API.
#[derive(Default)]
struct Workflows {
    all: BTreeMap<String, WorkflowConfig>,
    /// Ids of the configuration file's workflows, which the API cannot replace.
    from_config: BTreeSet<String>,
    /// Size (JSON bytes) of each API-made workflow.
    api_bytes: BTreeMap<String, usize>,
}

impl registry::Entry for Session {
    fn is_finished(&self) -> bool {
        Session::is_finished(self)
    }
}

impl registry::Entry for Batch {
    fn is_finished(&self) -> bool {
        Batch::is_finished(self)
    }
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
            let pool = Pool::start(w.spec(name), w.pool.to_config())
                .map_err(|e| OrchestratorError::Pool(name.clone(), e))?;
            pools.insert(name.clone(), Arc::new(pool));
        }
        Ok(Self::with_pools(pools, config))
    }

    /// An orchestrator over pools started elsewhere.
    pub fn with_pools(pools: BTreeMap<String, Arc<Pool>>, config: &FerryConfig) -> Arc<Self> {
        let limits = config.limits.clone();
        let keep = config.server.keep_finished;
        Arc::new(Orchestrator {
            pools,
            worker_configs: config.workers.clone(),
            workflows: RwLock::new(Workflows {
                all: config
                    .workflows
                    .iter()
                    .map(|w| (w.id.clone(), w.clone()))
                    .collect(),
                from_config: config.workflows.iter().map(|w| w.id.clone()).collect(),
                api_bytes: BTreeMap::new(),
            }),
            sessions: Registry::new(
                ("session", "sessions"),
                keep,
                limits.open_sessions,
                limits.open_session_bytes,
            ),
            batches: Registry::new(
                ("batch", "batches"),
                keep,
                limits.open_batches,
                limits.open_batch_bytes,
            ),
            metrics: Metrics::new(metrics::known_operations(config)),
            next_id: AtomicU64::new(1),
            limits,
            sdxl_worker_type: config.server.sdxl_worker_type.clone(),
            styles: sdxl::Styles::new(&config.sdxl),
        })
    }

    /// Whether HTTP clients may call `operation` on `worker_type` (its `api_operations`;
    /// a type started without a configuration gets the default policy).
    pub fn allows_api_call(&self, worker_type: &str, operation: &str) -> bool {
        match self.worker_configs.get(worker_type) {
            Some(c) => c.allows_api_operation(operation),
            None => placeholder_worker().allows_api_operation(operation),
        }
    }

    /// [`allows_api_call`](Self::allows_api_call) as a result: `UnknownWorkerType` or
    /// `NotAllowed`.
    pub fn check_api_call(
        &self,
        worker_type: &str,
        operation: &str,
    ) -> Result<(), OrchestratorError> {
        self.pool(worker_type)?;
        if self.allows_api_call(worker_type, operation) {
            Ok(())
        } else {
            Err(OrchestratorError::NotAllowed(format!(
                "operation `{}` of worker type `{worker_type}` is not open to API clients \
                 (workers.{worker_type}.api_operations)",
                operation.escape_debug()
            )))
        }
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

    /// Calls a worker on behalf of an HTTP client: like [`call`](Self::call), after
    /// checking that the operation is open to clients (`api_operations`).
    pub async fn call_api(
        &self,
        worker_type: &str,
        request: Envelope,
        attachments: Vec<Vec<u8>>,
        on_event: impl FnMut(&Envelope) + Send,
    ) -> Result<Response, OrchestratorError> {
        self.check_api_call(
            worker_type,
            request.operation.as_deref().unwrap_or_default(),
        )?;
        self.call(worker_type, request, attachments, on_event).await
    }

    /// The style presets and the quality boost of the SDXL routes (`[sdxl]`).
    pub fn styles(&self) -> &sdxl::Styles {
        &self.styles
    }

    /// A generation request for the SDXL worker type that asks for a `style` or a
    /// `quality` becomes the plain nested request the worker reads
    /// ([`sdxl::Styles::prepare`]); any other request is left as it is.
    fn apply_styles(
        &self,
        worker_type: &str,
        request: &mut Envelope,
    ) -> Result<(), OrchestratorError> {
        let generation = request
            .operation
            .as_deref()
            .is_some_and(|op| sdxl::GENERATION_OPERATIONS.contains(&op));
        if worker_type != self.sdxl_worker_type || !generation {
            return Ok(());
        }
        if let Some(data) = request.data.as_mut() {
            if sdxl::Styles::asks(data) {
                *data = self
                    .styles
                    .prepare(data)
                    .map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Calls `operation` on a worker of `worker_type`; events reach `on_event`. Trusted:
    /// no `api_operations` check (workflow steps from the configuration, the SDXL routes'
    /// fixed operations). A generation request for the SDXL worker type that names a
    /// `style` or `quality` gets them applied first ([`styles`](Self::styles)).
    pub async fn call(
        &self,
        worker_type: &str,
        mut request: Envelope,
        attachments: Vec<Vec<u8>>,
        on_event: impl FnMut(&Envelope) + Send,
    ) -> Result<Response, OrchestratorError> {
        let pool = self.pool(worker_type)?;
        self.apply_styles(worker_type, &mut request)?;
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
                .filter(|s| s.state == ferry::pool::WorkerState::Ready)
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
        metrics::render_workers(&mut out, &statuses);
        out
    }

    /// The workflows.
    pub fn workflows(&self) -> Vec<WorkflowConfig> {
        self.workflows.read().all.values().cloned().collect()
    }

    /// One workflow.
    pub fn workflow(&self, id: &str) -> Result<WorkflowConfig, OrchestratorError> {
        self.workflows
            .read()
            .all
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::NotFound(format!("workflow `{id}`")))
    }

    /// Adds (or replaces) a workflow made through the API, after checking it against the
    /// worker types, their `api_operations` and `[limits]`. Workflows of the
    /// configuration file cannot be replaced.
    pub fn put_workflow(&self, workflow: WorkflowConfig) -> Result<(), OrchestratorError> {
        for step in &workflow.steps {
            if self.pools.contains_key(&step.worker_type) {
                self.check_api_call(&step.worker_type, &step.operation)
                    .map_err(|e| {
                        OrchestratorError::NotAllowed(format!("step `{}`: {e}", step.name))
                    })?;
            }
        }
        let probe = FerryConfig {
            server: Default::default(),
            workers: self
                .pools
                .keys()
                .map(|k| (k.clone(), placeholder_worker()))
                .collect(),
            workflows: vec![workflow.clone()],
            limits: Default::default(),
            sdxl: Default::default(),
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
        let bytes = serde_json::to_vec(&workflow).map_or(usize::MAX, |v| v.len());
        let mut w = self.workflows.write();
        if w.from_config.contains(&workflow.id) {
            return Err(OrchestratorError::NotAllowed(format!(
                "workflow `{}` is defined in the configuration file and cannot be replaced",
                workflow.id
            )));
        }
        let others = w.api_bytes.iter().filter(|(id, _)| **id != workflow.id);
        let (count, total) = others.fold((0usize, 0usize), |(n, b), (_, s)| {
            (n + 1, b.saturating_add(*s))
        });
        if count >= self.limits.api_workflows {
            return Err(OrchestratorError::LimitReached(format!(
                "{count} workflows made through the API already (limits.api_workflows)"
            )));
        }
        if total.saturating_add(bytes) > self.limits.api_workflow_bytes {
            return Err(OrchestratorError::LimitReached(format!(
                "this workflow ({bytes} bytes) would take API-made workflows past {} bytes \
                 (limits.api_workflow_bytes)",
                self.limits.api_workflow_bytes
            )));
        }
        w.api_bytes.insert(workflow.id.clone(), bytes);
        w.all.insert(workflow.id.clone(), workflow);
        Ok(())
    }

    /// Deletes a workflow made through the API (those of the configuration file stay).
    pub fn delete_workflow(&self, id: &str) -> Result<(), OrchestratorError> {
        let mut w = self.workflows.write();
        if w.from_config.contains(id) {
            return Err(OrchestratorError::NotAllowed(format!(
                "workflow `{id}` is defined in the configuration file and cannot be deleted"
            )));
        }
        w.api_bytes.remove(id);
        w.all
            .remove(id)
            .map(drop)
            .ok_or_else(|| OrchestratorError::NotFound(format!("workflow `{id}`")))
    }

    /// Starts a session running workflow `id` on `input`.
    pub fn execute_workflow(
        self: &Arc<Self>,
        id: &str,
        input: serde_json::Value,
    ) -> Result<Arc<Session>, OrchestratorError> {
        let workflow = self.workflow(id)?;
        let bytes = serde_json::to_vec(&input).map_or(usize::MAX, |v| v.len());
        let session_id = self.new_id("s");
        self.sessions.insert_with(session_id.clone(), bytes, || {
            Session::start(self.clone(), session_id, workflow, input)
        })
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.all()
    }

    /// One session.
    pub fn session(&self, id: &str) -> Result<Arc<Session>, OrchestratorError> {
        self.sessions.get(id)
    }

    /// Cancels and forgets a session.
    pub fn delete_session(&self, id: &str) -> Result<(), OrchestratorError> {
        let session = self.sessions.remove(id)?;
        let _ = session.control(Control::Cancel);
        Ok(())
    }

    /// Creates a batch (pending until executed) for an HTTP client: an operation target
    /// must be open to clients (`api_operations`), and `[limits]` apply.
    pub fn create_batch(
        self: &Arc<Self>,
        spec: BatchSpec,
    ) -> Result<Arc<Batch>, OrchestratorError> {
        match &spec.target {
            BatchTarget::Operation {
                worker_type,
                operation,
            } => {
                self.check_api_call(worker_type, operation)?;
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
        let bytes = serde_json::to_vec(&spec.items).map_or(usize::MAX, |v| v.len());
        let id = self.new_id("b");
        self.batches
            .insert_with(id.clone(), bytes, || Batch::new(id, spec))
    }

    /// Every batch.
    pub fn batches(&self) -> Vec<Arc<Batch>> {
        self.batches.all()
    }

    /// One batch.
    pub fn batch(&self, id: &str) -> Result<Arc<Batch>, OrchestratorError> {
        self.batches.get(id)
    }

    /// Cancels and forgets a batch.
    pub fn delete_batch(&self, id: &str) -> Result<(), OrchestratorError> {
        self.batches.remove(id)?.cancel(None);
        Ok(())
    }

    /// Stops every pool gracefully (blocking).
    pub fn shutdown(&self) {
        for s in self.sessions.all() {
            let _ = s.control(Control::Cancel);
        }
        for b in self.batches.all() {
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
        api_operations: None,
        pool: Default::default(),
    }
}
