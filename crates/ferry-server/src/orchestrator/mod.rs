//! Workflows, sessions and batches over the worker pools.
//!
//! Everything runs through the pools: a workflow step is a pool call, a batch item is a
//! pool call or a workflow run. Sessions (workflow runs), batches and API-made workflows
//! live in the state store ([`crate::state`]) and are controlled through this type (the
//! HTTP API is a thin layer over it). A background task per host claims batch items and
//! abandoned sessions, renews its leases and picks up controls asked on other hosts
//! (`runner`).

mod batch;
mod error;
mod metrics;
mod runner;
mod session;
mod template;

pub use batch::{BatchItemStatus, BatchSpec, BatchStatus, BatchTarget, BatchView, ItemStatus};
pub use error::OrchestratorError;
pub use metrics::{known_operations, Metrics};
pub use session::{Control, Session, SessionStatus, SessionView, StepRecord};

use crate::config::{FerryConfig, LimitsConfig, StateConfig, WorkerTypeConfig, WorkflowConfig};
use crate::sdxl;
use crate::state::{NewBatch, NewSession, OpenCaps, StateStore};
use ferry::pool::{Pool, WorkerStatus};
use ferry::protocol::Envelope;
use ferry::worker::{CallOptions, Response};
use parking_lot::Mutex;
use session::{Flag, Resume};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// The orchestration core.
pub struct Orchestrator {
    pools: BTreeMap<String, Arc<Pool>>,
    /// Each worker type's configuration: what HTTP clients may call on it.
    worker_configs: BTreeMap<String, WorkerTypeConfig>,
    /// The configuration file's workflows (trusted, fixed); API-made ones are in the store.
    config_workflows: BTreeMap<String, WorkflowConfig>,
    store: StateStore,
    state_config: StateConfig,
    keep_finished: usize,
    /// Sessions this host runs, by id (until their end is stored).
    live_sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Batch items this host runs: their cancel switches and the worker type they use.
    running_items: Mutex<HashMap<(String, usize), RunningItem>>,
    /// Wakes the runner: a batch started, an item ended.
    wake: Arc<Notify>,
    /// Set by [`shutdown`](Self::shutdown): no new claims, no failures stored.
    stopping: std::sync::atomic::AtomicBool,
    metrics: Metrics,
    limits: LimitsConfig,
    /// The worker type of the SDXL routes (`server.sdxl_worker_type`).
    sdxl_worker_type: String,
    /// The style presets and the quality boost (`[sdxl]`).
    styles: sdxl::Styles,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("worker_types", &self.pools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Opens the state store of `[state]`, starts a pool per configured worker type
    /// (waiting until each has tried its `min_workers`) and the runner, which resumes the
    /// unfinished work of the store.
    pub async fn start(config: &FerryConfig) -> Result<Arc<Self>, OrchestratorError> {
        let store = StateStore::open(&config.state).await?;
        let workers = config.workers.clone();
        let pools = tokio::task::spawn_blocking(move || {
            let mut pools = BTreeMap::new();
            for (name, w) in &workers {
                let pool = Pool::start(w.spec(name), w.pool.to_config())
                    .map_err(|e| OrchestratorError::Pool(name.clone(), e))?;
                pools.insert(name.clone(), Arc::new(pool));
            }
            Ok::<_, OrchestratorError>(pools)
        })
        .await
        .map_err(|e| OrchestratorError::Invalid(format!("pool start-up panicked: {e}")))??;
        Ok(Self::with_pools(pools, config, store))
    }

    /// An orchestrator over pools started elsewhere and an open store; starts the runner
    /// (needs a Tokio runtime).
    pub fn with_pools(
        pools: BTreeMap<String, Arc<Pool>>,
        config: &FerryConfig,
        store: StateStore,
    ) -> Arc<Self> {
        let orch = Arc::new(Orchestrator {
            pools,
            worker_configs: config.workers.clone(),
            config_workflows: config
                .workflows
                .iter()
                .map(|w| (w.id.clone(), w.clone()))
                .collect(),
            store,
            state_config: config.state.clone(),
            keep_finished: config.server.keep_finished,
            live_sessions: Mutex::new(HashMap::new()),
            running_items: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            metrics: Metrics::new(metrics::known_operations(config)),
            limits: config.limits.clone(),
            sdxl_worker_type: config.server.sdxl_worker_type.clone(),
            styles: sdxl::Styles::new(&config.sdxl),
        });
        runner::spawn(&orch);
        orch
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        // SeqCst: pairs with the store in `shutdown`, before the pools stop.
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The state store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Whether the state store answers (`/health/ready`).
    pub async fn state_ready(&self) -> Result<(), OrchestratorError> {
        Ok(self.store.ping().await?)
    }

    /// Whether `operation` of `worker_type` may run twice: it is listed in
    /// `workers.<type>.pool.idempotent_operations` (also what the pool retries after a
    /// worker crash). A batch item or session step that was running on a host that died is
    /// run again only then, and ends `interrupted` otherwise.
    pub fn is_idempotent(&self, worker_type: &str, operation: &str) -> bool {
        self.worker_configs
            .get(worker_type)
            .is_some_and(|c| c.pool.idempotent_operations.iter().any(|o| o == operation))
    }

    /// Whether every operation a batch target runs may run twice.
    pub(crate) fn target_is_idempotent(&self, target: &BatchTarget) -> bool {
        match target {
            BatchTarget::Operation {
                worker_type,
                operation,
            } => self.is_idempotent(worker_type, operation),
            BatchTarget::Workflow { workflow } => {
                self.config_workflows.get(workflow).is_some_and(|w| {
                    w.steps
                        .iter()
                        .all(|s| self.is_idempotent(&s.worker_type, &s.operation))
                })
            }
        }
    }

    /// The worker type whose places a batch item of `target` takes (a workflow's: its
    /// first step's).
    pub(crate) fn target_worker_type(&self, target: &BatchTarget) -> Option<String> {
        match target {
            BatchTarget::Operation { worker_type, .. } => Some(worker_type.clone()),
            BatchTarget::Workflow { workflow } => self
                .config_workflows
                .get(workflow)
                .and_then(|w| w.steps.first())
                .map(|s| s.worker_type.clone()),
        }
    }

    /// How many more batch items of `worker_type` this host can start now: its pool's
    /// places (`max_workers` × `max_in_flight`) less the items it runs already.
    pub(crate) fn item_room(&self, worker_type: &str) -> usize {
        let places = self.worker_configs.get(worker_type).map_or(1, |c| {
            c.pool
                .max_workers
                .saturating_mul(c.pool.max_in_flight.max(1))
        });
        let busy = self
            .running_items
            .lock()
            .values()
            .filter(|i| i.worker_type == worker_type)
            .count();
        places.saturating_sub(busy)
    }

    /// What a batch target runs, for messages.
    pub(crate) fn target_operations(&self, target: &BatchTarget) -> String {
        match target {
            BatchTarget::Operation {
                worker_type,
                operation,
            } => format!("operation `{operation}` of `{worker_type}`"),
            BatchTarget::Workflow { workflow } => {
                format!("a step of workflow `{workflow}`")
            }
        }
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

    /// A fresh id, unique across hosts and restarts: random, 64 bits.
    fn new_id(&self, prefix: &str) -> String {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: the clock and a counter still differ between calls here.
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes = (crate::state::now_ms() as u64 ^ n.rotate_left(40)).to_le_bytes();
        }
        format!("{prefix}-{:016x}", u64::from_le_bytes(bytes))
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

    /// The workflows: the configuration file's, then those made through the API.
    pub async fn workflows(&self) -> Result<Vec<WorkflowConfig>, OrchestratorError> {
        let mut all = self.config_workflows.clone();
        for (id, body) in self.store.workflows().await? {
            if let std::collections::btree_map::Entry::Vacant(slot) = all.entry(id) {
                slot.insert(parse_stored("workflow", &body)?);
            }
        }
        Ok(all.into_values().collect())
    }

    /// One workflow.
    pub async fn workflow(&self, id: &str) -> Result<WorkflowConfig, OrchestratorError> {
        if let Some(w) = self.config_workflows.get(id) {
            return Ok(w.clone());
        }
        let api = self.store.workflows().await?;
        match api.iter().find(|(i, _)| i == id) {
            Some((_, body)) => parse_stored("workflow", body),
            None => Err(OrchestratorError::NotFound(format!("workflow `{id}`"))),
        }
    }

    /// Adds (or replaces) a workflow made through the API, after checking it against the
    /// worker types, their `api_operations` and `[limits]`. Workflows of the
    /// configuration file cannot be replaced.
    pub async fn put_workflow(&self, workflow: WorkflowConfig) -> Result<(), OrchestratorError> {
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
            state: Default::default(),
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
        if self.config_workflows.contains_key(&workflow.id) {
            return Err(OrchestratorError::NotAllowed(format!(
                "workflow `{}` is defined in the configuration file and cannot be replaced",
                workflow.id
            )));
        }
        let body = serde_json::to_string(&workflow)
            .map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
        self.store
            .put_workflow(
                &workflow.id,
                &body,
                self.limits.api_workflows,
                self.limits.api_workflow_bytes,
            )
            .await?;
        Ok(())
    }

    /// Deletes a workflow made through the API (those of the configuration file stay).
    pub async fn delete_workflow(&self, id: &str) -> Result<(), OrchestratorError> {
        if self.config_workflows.contains_key(id) {
            return Err(OrchestratorError::NotAllowed(format!(
                "workflow `{id}` is defined in the configuration file and cannot be deleted"
            )));
        }
        if self.store.delete_workflow(id).await? {
            Ok(())
        } else {
            Err(OrchestratorError::NotFound(format!("workflow `{id}`")))
        }
    }

    async fn prune(&self) -> Result<(), OrchestratorError> {
        self.store
            .prune(
                self.keep_finished,
                std::time::Duration::from_secs(self.state_config.keep_finished_s),
                std::time::Duration::from_secs(self.state_config.idempotency_ttl_s),
            )
            .await?;
        Ok(())
    }

    /// Starts a session running workflow `id` on `input`.
    pub async fn execute_workflow(
        self: &Arc<Self>,
        id: &str,
        input: serde_json::Value,
    ) -> Result<SessionView, OrchestratorError> {
        let workflow = self.workflow(id).await?;
        let input_text =
            serde_json::to_string(&input).map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
        let session_id = self.new_id("s");
        let view = session::fresh_view(&session_id, &workflow);
        self.prune().await?;
        self.store
            .create_session(
                NewSession {
                    id: &session_id,
                    workflow: serde_json::to_string(&workflow)
                        .map_err(|e| OrchestratorError::Invalid(e.to_string()))?,
                    input: input_text.clone(),
                    view: serde_json::to_string(&view)
                        .map_err(|e| OrchestratorError::Invalid(e.to_string()))?,
                    bytes: input_text.len(),
                },
                OpenCaps {
                    count: self.limits.open_sessions,
                    bytes: self.limits.open_session_bytes,
                },
            )
            .await?;
        let session = Session::start(
            self.clone(),
            session_id.clone(),
            workflow,
            input.clone(),
            view,
            1,
            Resume::fresh(&input),
            Flag::Run,
        );
        self.live_sessions
            .lock()
            .insert(session_id, session.clone());
        Ok(session.view())
    }

    /// Forgets a live session (its end is stored, or another host took it over).
    pub(crate) fn forget_session(&self, id: &str) {
        self.live_sessions.lock().remove(id);
    }

    /// Every session.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, OrchestratorError> {
        let mut out = Vec::new();
        for id in self.store.session_ids().await? {
            match self.session(&id).await {
                Ok(v) => out.push(v),
                // Deleted or pruned meanwhile.
                Err(OrchestratorError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One session: as this host runs it, else as stored.
    pub async fn session(&self, id: &str) -> Result<SessionView, OrchestratorError> {
        let live = self.live_sessions.lock().get(id).cloned();
        if let Some(s) = live {
            return Ok(s.view());
        }
        let stored = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("session `{id}`")))?;
        let mut view: SessionView = parse_stored("session", &stored.view)?;
        view.result_attachments = stored
            .result_attachments
            .iter()
            .map(|a| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, a))
            .collect();
        Ok(view)
    }

    /// Applies a control to a session: at once when this host runs it, else through the
    /// store for the host that does (picked up within a third of `lease_ms`).
    pub async fn control_session(
        self: &Arc<Self>,
        id: &str,
        control: Control,
    ) -> Result<SessionView, OrchestratorError> {
        let live = self.live_sessions.lock().get(id).cloned();
        if let Some(s) = live {
            s.control(control)?;
            return Ok(s.view());
        }
        let view = self.session(id).await?;
        if view.status.is_finished() && control == Control::Restart {
            // Finished and no longer in memory: restarted here, as a live one would be.
            return self.restart_finished(id, view).await;
        }
        if view.status.is_finished() {
            return Err(OrchestratorError::InvalidState(format!(
                "cannot {} a {} session",
                control.as_str(),
                view.status.as_str()
            )));
        }
        self.store.request_control(id, control.as_str()).await?;
        Ok(view)
    }

    /// Restarts finished session `id` (whose last view is `last`) from its first step on
    /// this host.
    async fn restart_finished(
        self: &Arc<Self>,
        id: &str,
        last: SessionView,
    ) -> Result<SessionView, OrchestratorError> {
        let stored = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("session `{id}`")))?;
        let workflow: crate::config::WorkflowConfig =
            parse_stored("session workflow", &stored.workflow)?;
        let input: serde_json::Value = parse_stored("session input", &stored.input)?;
        let view = SessionView {
            created_at: last.created_at,
            ..session::fresh_view(id, &workflow)
        };
        let view_text =
            serde_json::to_string(&view).map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
        let caps = OpenCaps {
            count: self.limits.open_sessions,
            bytes: self.limits.open_session_bytes,
        };
        let Some(reopened) = self.store.reopen_session(id, &view_text, caps).await? else {
            return Err(OrchestratorError::InvalidState(format!(
                "session `{id}` is running on another host; try again"
            )));
        };
        let session = Session::start(
            self.clone(),
            id.to_owned(),
            workflow,
            input.clone(),
            view,
            reopened.epoch,
            session::Resume::fresh(&input),
            session::Flag::Run,
        );
        self.live_sessions
            .lock()
            .insert(id.to_owned(), session.clone());
        Ok(session.view())
    }

    /// Cancels and forgets a session.
    pub async fn delete_session(&self, id: &str) -> Result<(), OrchestratorError> {
        let live = self.live_sessions.lock().remove(id);
        if let Some(s) = live {
            let _ = s.control(Control::Cancel);
        } else {
            // Run elsewhere: its host stops at its next save (the row is gone).
            let _ = self
                .store
                .request_control(id, Control::Cancel.as_str())
                .await;
        }
        if self.store.delete_session(id).await? {
            Ok(())
        } else {
            Err(OrchestratorError::NotFound(format!("session `{id}`")))
        }
    }

    /// Creates a batch (pending until executed) for an HTTP client: an operation target
    /// must be open to clients (`api_operations`), and `[limits]` apply.
    pub async fn create_batch(&self, spec: BatchSpec) -> Result<BatchView, OrchestratorError> {
        match &spec.target {
            BatchTarget::Operation {
                worker_type,
                operation,
            } => {
                self.check_api_call(worker_type, operation)?;
            }
            BatchTarget::Workflow { workflow } => {
                self.workflow(workflow).await?;
            }
        }
        if spec.parallelism == 0 {
            return Err(OrchestratorError::Invalid(
                "parallelism must be at least 1".into(),
            ));
        }
        let bytes = serde_json::to_vec(&spec.items).map_or(usize::MAX, |v| v.len());
        let id = self.new_id("b");
        let stored_spec = serde_json::to_string(&batch::StoredSpec {
            target: spec.target.clone(),
            priority: spec.priority,
        })
        .map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
        self.prune().await?;
        self.store
            .create_batch(
                NewBatch {
                    id: &id,
                    spec: stored_spec,
                    parallelism: spec.parallelism,
                    items: &spec.items,
                    bytes,
                },
                OpenCaps {
                    count: self.limits.open_batches,
                    bytes: self.limits.open_batch_bytes,
                },
            )
            .await?;
        self.batch(&id).await
    }

    /// Every batch.
    pub async fn batches(&self) -> Result<Vec<BatchView>, OrchestratorError> {
        let mut out = Vec::new();
        for id in self.store.batch_ids().await? {
            match self.batch(&id).await {
                Ok(v) => out.push(v),
                Err(OrchestratorError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One batch.
    pub async fn batch(&self, id: &str) -> Result<BatchView, OrchestratorError> {
        let stored = self
            .store
            .batch(id)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("batch `{id}`")))?;
        BatchView::from_stored(stored)
    }

    /// Starts running a pending batch's items (on every host with room).
    pub async fn execute_batch(&self, id: &str) -> Result<BatchView, OrchestratorError> {
        if !self.store.execute_batch(id).await? {
            self.batch(id).await?;
            return Err(OrchestratorError::InvalidState(format!(
                "batch `{id}` was already executed or cancelled"
            )));
        }
        self.wake.notify_one();
        self.batch(id).await
    }

    /// Cancels a batch's given items (all when `None`); running ones have their request
    /// cancelled (on another host: at its next lease renewal).
    pub async fn cancel_batch(
        &self,
        id: &str,
        indices: Option<&[usize]>,
    ) -> Result<BatchView, OrchestratorError> {
        if !self.store.cancel_batch(id, indices).await? {
            return Err(OrchestratorError::NotFound(format!("batch `{id}`")));
        }
        self.cancel_local_items(id, indices);
        self.batch(id).await
    }

    fn cancel_local_items(&self, id: &str, indices: Option<&[usize]>) {
        for ((batch, index), item) in self.running_items.lock().iter() {
            if batch == id && indices.is_none_or(|c| c.contains(index)) {
                item.cancel.send_replace(Flag::Cancel);
            }
        }
    }

    /// Cancels and forgets a batch.
    pub async fn delete_batch(&self, id: &str) -> Result<(), OrchestratorError> {
        self.cancel_local_items(id, None);
        let _ = self.store.cancel_batch(id, None).await?;
        if self.store.delete_batch(id).await? {
            Ok(())
        } else {
            Err(OrchestratorError::NotFound(format!("batch `{id}`")))
        }
    }

    /// Stops every pool gracefully (blocking).
    ///
    /// Sessions and batch items still running are left as they are in the store: the next
    /// start of this host (same `host_id`) or another host takes them over. A session that
    /// has finished has its end stored first (waiting five seconds at most): a client
    /// that saw it finished finds it finished after a restart, not run again from its last
    /// stored step.
    pub fn shutdown(&self) {
        self.wait_for_stored_ends(STORE_ENDS_WAIT);
        // From here a call that fails is the pools stopping, not the work failing: it stays
        // unfinished in the store for the next start.
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
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

/// How long [`Orchestrator::shutdown`] waits for the ends of finished sessions to be
/// stored: a store that does not answer must not hold the exit up for long.
const STORE_ENDS_WAIT: Duration = Duration::from_secs(5);

impl Orchestrator {
    /// Waits (blocking, at most `limit`) until no live session is finished: each leaves
    /// `live_sessions` once its end is stored (`session::save_loop`).
    fn wait_for_stored_ends(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.live_sessions.lock().values().any(|s| s.is_finished()) {
            if Instant::now() >= until {
                tracing::warn!(
                    ?limit,
                    "stopping with finished sessions whose end is not stored yet"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A batch item this host runs.
pub(crate) struct RunningItem {
    /// Its cancel switch.
    pub(crate) cancel: watch::Sender<Flag>,
    /// The worker type it takes a place of (a workflow's first step's).
    pub(crate) worker_type: String,
}

/// A JSON value read back from the store.
fn parse_stored<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, OrchestratorError> {
    serde_json::from_str(text).map_err(|e| {
        OrchestratorError::State(crate::state::StateError::Corrupt(format!("{what}: {e}")))
    })
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
        frame_header: Default::default(),
        stdio_framing: Default::default(),
        startup_timeout_ms: 1,
        shutdown_grace_ms: 1,
        max_frame: 1 << 20,
        socket_dir: None,
        abstract_socket: false,
        tcp_listen: None,
        tcp_advertise: None,
        token: None,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        tls_server_name: None,
        shm_capacity: None,
        shm_wait: Default::default(),
        shm_spin_us: None,
        shm_yield_us: None,
        shm_send_timeout_ms: None,
        api_operations: None,
        pool: Default::default(),
    }
}
