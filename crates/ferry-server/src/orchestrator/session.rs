//! Sessions: one run of a workflow, controllable between steps.

use super::template::{render, Scope};
use super::Orchestrator;
use crate::config::WorkflowConfig;
use base64::Engine as _;
use ferry::protocol::{now_timestamp, Envelope, ErrorBody, ErrorCode, Priority, EVENT_PROGRESS};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Created, not started.
    Pending,
    /// A step is running.
    Running,
    /// Stopped between steps until resumed.
    Paused,
    /// Every step succeeded.
    Completed,
    /// A step failed.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Its host died while a step ran whose operation is not listed in
    /// `idempotent_operations`, so the step was not run again.
    Interrupted,
}

impl SessionStatus {
    /// Whether it has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SessionStatus::Completed
                | SessionStatus::Failed
                | SessionStatus::Cancelled
                | SessionStatus::Interrupted
        )
    }

    /// Its name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Running => "running",
            SessionStatus::Paused => "paused",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Cancelled => "cancelled",
            SessionStatus::Interrupted => "interrupted",
        }
    }
}

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Stop before the next step.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Stop now, cancelling the running step.
    Cancel,
    /// Cancel and run the workflow again from the first step.
    Restart,
}

impl Control {
    /// Its name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
            Control::Restart => "restart",
        }
    }

    /// The control named `name`.
    pub fn from_name(name: &str) -> Option<Control> {
        [
            Control::Pause,
            Control::Resume,
            Control::Cancel,
            Control::Restart,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

/// What the runner is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    Run,
    Pause,
    Cancel,
}

/// One step's record in a session.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The step name.
    pub name: String,
    /// `pending`, `running`, `completed`, `failed`, `cancelled`.
    pub status: String,
    /// When it started.
    pub started_at: Option<String>,
    /// How long it took.
    pub duration_ms: Option<f64>,
    /// Its error, if it failed.
    pub error: Option<ErrorBody>,
}

/// A snapshot of a session, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// The workflow it runs.
    pub workflow_id: String,
    /// Where it is.
    pub status: SessionStatus,
    /// The step running (or next, when paused).
    pub current_step: Option<String>,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// Per-step records.
    pub steps: Vec<StepRecord>,
    /// The last step's output, when completed.
    pub result: Option<Value>,
    /// The last step's attachments, base64, when completed.
    pub result_attachments: Vec<String>,
    /// Why it failed.
    pub error: Option<ErrorBody>,
    /// When it was created.
    pub created_at: String,
    /// Whether a pause was asked for and is not yet in effect.
    pub pause_requested: bool,
}

struct Inner {
    view: SessionView,
    generation: u64,
}

/// One run of a workflow.
pub struct Session {
    id: String,
    workflow: WorkflowConfig,
    input: Value,
    orch: std::sync::Weak<Orchestrator>,
    inner: Mutex<Inner>,
    control: Mutex<watch::Sender<Flag>>,
    generation: AtomicU64,
    /// The claim this host runs it under: its saves count only while it is current.
    epoch: i64,
    /// Where a resume would start (finished steps' outputs).
    resume: Mutex<Resume>,
    saves: tokio::sync::mpsc::UnboundedSender<Save>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How a workflow run ended, when not with a result.
pub(crate) enum WorkflowEnd {
    Cancelled,
    Failed(ErrorBody),
}

/// Progress of a workflow run, for the session's records.
pub(crate) enum StepEvent<'a> {
    Started(usize),
    Progress(usize, f64),
    Finished(usize, Result<(), &'a ErrorBody>, f64),
    Cancelled(usize),
}

/// A point a workflow run waits at until its session's store has it, so a host that dies
/// just after leaves the truth behind: a step is recorded as started before its request
/// reaches a worker, and a step's output is stored before the next step starts.
pub(crate) enum Checkpoint {
    /// A step is about to send its request(s) (its view says `running`).
    Started,
    /// Step `step` succeeded with this output and these attachments.
    Done {
        step: usize,
        output: Value,
        attachments: Vec<Vec<u8>>,
    },
}

/// Where a workflow run starts: the first step, or after the steps a host that died had
/// finished.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct Resume {
    /// The first step to run.
    pub(crate) step: usize,
    /// Finished steps' outputs by name.
    pub(crate) outputs: HashMap<String, Value>,
    /// The last finished step's output (`$previous`), or the input.
    pub(crate) previous: Value,
    /// Finished steps' attachments by name (not serialized: stored as attachments).
    #[serde(skip)]
    pub(crate) attachments: HashMap<String, Vec<Vec<u8>>>,
}

impl Resume {
    /// From the first step.
    pub(crate) fn fresh(input: &Value) -> Resume {
        Resume {
            step: 0,
            outputs: HashMap::new(),
            previous: input.clone(),
            attachments: HashMap::new(),
        }
    }
}

/// Runs `workflow` on `input`; pauses and cancels follow `ctl`.
#[allow(clippy::too_many_arguments)] // each is a distinct input of a run; a struct would only rename them
pub(crate) async fn run_workflow<D>(
    orch: &Orchestrator,
    workflow: &WorkflowConfig,
    input: &Value,
    start: Resume,
    priority: Option<Priority>,
    ctl: &mut watch::Receiver<Flag>,
    mut on_step: impl FnMut(StepEvent<'_>) + Send,
    mut on_pause: impl FnMut(bool) + Send,
    mut durable: impl FnMut(Checkpoint) -> D + Send,
) -> Result<(Value, Vec<Vec<u8>>), WorkflowEnd>
where
    D: std::future::Future<Output = ()> + Send,
{
    let mut outputs = start.outputs;
    // Requests through the API carry no attachments into a workflow; `request` names none.
    let mut attachments = start.attachments;
    attachments.insert("request".to_owned(), Vec::new());
    let mut previous = start.previous;
    let mut last_attachments = match start.step.checked_sub(1) {
        Some(i) => workflow
            .steps
            .get(i)
            .and_then(|s| attachments.get(&s.name).cloned())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    for (i, step) in workflow.steps.iter().enumerate().skip(start.step) {
        loop {
            let flag = *ctl.borrow_and_update();
            match flag {
                Flag::Run => break,
                Flag::Cancel => return Err(WorkflowEnd::Cancelled),
                Flag::Pause => {
                    on_pause(true);
                    if ctl.changed().await.is_err() {
                        return Err(WorkflowEnd::Cancelled);
                    }
                    on_pause(false);
                }
            }
        }
        on_step(StepEvent::Started(i));
        durable(Checkpoint::Started).await;
        let scope = Scope {
            request: input,
            previous: &previous,
            steps: &outputs,
            item: None,
        };
        let atts = match step.attachments_from.as_deref() {
            Some(from) => attachments.get(from).cloned().unwrap_or_default(),
            None => Vec::new(),
        };
        // The inputs of the step's calls: one, or one per element of its `for_each` list.
        let inputs: Vec<Value> = match &step.for_each {
            None => vec![render(&step.input, &scope)],
            Some(list) => match render(&Value::String(list.clone()), &scope) {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(k, item)| {
                        render(
                            &step.input,
                            &Scope {
                                item: Some((item, k)),
                                ..scope
                            },
                        )
                    })
                    .collect(),
                other => {
                    let body = ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "step `{}`: for_each `{list}` is not a list (it is {})",
                            step.name,
                            kind_of(&other)
                        ),
                    );
                    on_step(StepEvent::Finished(i, Err(&body), 0.0));
                    return Err(WorkflowEnd::Failed(body));
                }
            },
        };
        let started = Instant::now();
        let runs = inputs.len();
        let mut datas = Vec::with_capacity(runs);
        let mut step_attachments = Vec::new();
        for (k, data) in inputs.into_iter().enumerate() {
            let mut request = Envelope::request("", step.operation.clone(), data);
            request.priority = step.priority.or(priority);
            request.deadline_ms = step.deadline_ms;
            // The latest progress reported by the call, picked up by the ticker below.
            let progress_cell: Mutex<Option<f64>> = Mutex::new(None);
            let call = orch.call(&step.worker_type, request, atts.clone(), |e| {
                if e.event_name.as_deref() == Some(EVENT_PROGRESS) {
                    if let Some(p) = e
                        .data
                        .as_ref()
                        .and_then(|d| d.get("progress"))
                        .and_then(Value::as_f64)
                    {
                        *progress_cell.lock() = Some(p);
                    }
                }
            });
            let cancelled = wait_cancel(ctl.clone());
            tokio::pin!(call, cancelled);
            let result = loop {
                tokio::select! {
                    r = &mut call => break r,
                    () = &mut cancelled => {
                        on_step(StepEvent::Cancelled(i));
                        return Err(WorkflowEnd::Cancelled);
                    }
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                        let latest = progress_cell.lock().take();
                        if let Some(p) = latest {
                            let p = (k as f64 + p.clamp(0.0, 1.0)) / runs as f64;
                            on_step(StepEvent::Progress(i, p));
                        }
                    }
                }
            };
            match result {
                Ok(response) => {
                    datas.push(response.data);
                    step_attachments.extend(response.attachments);
                }
                Err(e) => {
                    let took = started.elapsed().as_secs_f64() * 1000.0;
                    let mut body = e.to_body();
                    if step.for_each.is_some() {
                        body.message = format!("item {k}: {}", body.message);
                    }
                    on_step(StepEvent::Finished(i, Err(&body), took));
                    return Err(WorkflowEnd::Failed(body));
                }
            }
        }
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let data = match step.for_each {
            Some(_) => Value::Array(datas),
            None => datas.pop().unwrap_or(Value::Null),
        };
        on_step(StepEvent::Finished(i, Ok(()), took));
        durable(Checkpoint::Done {
            step: i,
            output: data.clone(),
            attachments: step_attachments.clone(),
        })
        .await;
        outputs.insert(step.name.clone(), data.clone());
        attachments.insert(step.name.clone(), step_attachments.clone());
        previous = data;
        last_attachments = step_attachments;
    }
    Ok((previous, last_attachments))
}

/// What a JSON value is, for an error.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null or missing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) async fn wait_cancel(mut ctl: watch::Receiver<Flag>) {
    loop {
        if *ctl.borrow_and_update() == Flag::Cancel {
            return;
        }
        if ctl.changed().await.is_err() {
            return;
        }
    }
}

/// A session's change on its way to the store.
struct Save {
    view: SessionView,
    progress: Option<String>,
    step_attachments: Option<(String, Vec<Vec<u8>>)>,
    result_attachments: Option<Vec<Vec<u8>>>,
    /// Told once this save (or a later one that overtook it) has been written.
    acks: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Session {
    /// Starts (or resumes) running a session this host holds under claim `epoch`.
    #[allow(clippy::too_many_arguments)] // what a fresh or a resumed session starts from
    pub(crate) fn start(
        orch: Arc<Orchestrator>,
        id: String,
        workflow: WorkflowConfig,
        input: Value,
        view: SessionView,
        epoch: i64,
        resume: Resume,
        flag: Flag,
    ) -> Arc<Session> {
        let (tx, _) = watch::channel(flag);
        let (saves, rx) = tokio::sync::mpsc::unbounded_channel();
        let session = Arc::new(Session {
            inner: Mutex::new(Inner {
                view,
                generation: 0,
            }),
            id,
            workflow,
            input,
            orch: Arc::downgrade(&orch),
            control: Mutex::new(tx),
            generation: AtomicU64::new(0),
            epoch,
            resume: Mutex::new(resume),
            saves,
        });
        tokio::spawn(save_loop(session.clone(), rx));
        session.spawn_runner(0);
        session
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A snapshot.
    pub fn view(&self) -> SessionView {
        self.inner.lock().view.clone()
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        self.inner.lock().view.status.is_finished()
    }

    /// Applies a control; refuses one that does not fit the current state.
    pub fn control(self: &Arc<Self>, control: Control) -> Result<(), super::OrchestratorError> {
        let status = self.inner.lock().view.status;
        let finished = self.is_finished();
        let conflict = |what: &str| {
            Err(super::OrchestratorError::InvalidState(
                format!("cannot {what} a {status:?} session").to_lowercase(),
            ))
        };
        match control {
            Control::Pause if finished => conflict("pause"),
            Control::Resume if finished => conflict("resume"),
            Control::Cancel if finished => conflict("cancel"),
            Control::Pause => {
                self.update_any(|v| v.pause_requested = true);
                self.control.lock().send_replace(Flag::Pause);
                Ok(())
            }
            Control::Resume => {
                self.update_any(|v| v.pause_requested = false);
                self.control.lock().send_replace(Flag::Run);
                Ok(())
            }
            Control::Cancel => {
                self.control.lock().send_replace(Flag::Cancel);
                Ok(())
            }
            Control::Restart => {
                self.control.lock().send_replace(Flag::Cancel);
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                *self.resume.lock() = Resume::fresh(&self.input);
                {
                    let mut inner = self.inner.lock();
                    inner.generation = generation;
                    inner.view = SessionView {
                        created_at: inner.view.created_at.clone(),
                        ..fresh_view(&self.id, &self.workflow)
                    };
                }
                self.save(true, None, None, None);
                *self.control.lock() = watch::channel(Flag::Run).0;
                self.spawn_runner(generation);
                Ok(())
            }
        }
    }

    /// Sends the view (and, with `progress`, where a resume would start) to the store.
    fn save(
        &self,
        progress: bool,
        step_attachments: Option<(String, Vec<Vec<u8>>)>,
        result_attachments: Option<Vec<Vec<u8>>>,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let view = self.inner.lock().view.clone();
        let progress = progress.then(|| {
            serde_json::to_string(&*self.resume.lock()).unwrap_or_else(|_| "{}".to_owned())
        });
        // The save loop ends only after the session has; a send after that has nothing
        // left to record.
        let _ = self.saves.send(Save {
            view,
            progress,
            step_attachments,
            result_attachments,
            acks: ack.into_iter().collect(),
        });
    }

    /// Records a checkpoint of run `generation` and returns what tells when the store
    /// has it (`None` when the run is no longer the current one).
    fn checkpoint(
        &self,
        generation: u64,
        checkpoint: Checkpoint,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        if self.inner.lock().generation != generation {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        match checkpoint {
            Checkpoint::Started => self.save(false, None, None, Some(tx)),
            Checkpoint::Done {
                step,
                output,
                attachments,
            } => {
                let name = self.workflow.steps[step].name.clone();
                {
                    let mut r = self.resume.lock();
                    r.step = step + 1;
                    r.outputs.insert(name.clone(), output.clone());
                    r.previous = output;
                    r.attachments.insert(name.clone(), attachments.clone());
                }
                self.save(true, Some((name, attachments)), None, Some(tx));
            }
        }
        Some(rx)
    }

    /// Changes the view whatever the run, and saves it.
    fn update_any(&self, f: impl FnOnce(&mut SessionView)) {
        f(&mut self.inner.lock().view);
        self.save(false, None, None, None);
    }

    /// Changes the view if `generation` is still the current run, and saves it.
    fn update(&self, generation: u64, f: impl FnOnce(&mut SessionView)) -> bool {
        {
            let mut inner = self.inner.lock();
            if inner.generation != generation {
                return false;
            }
            f(&mut inner.view);
        }
        self.save(false, None, None, None);
        true
    }

    fn spawn_runner(self: &Arc<Self>, generation: u64) {
        let session = self.clone();
        let mut ctl = self.control.lock().subscribe();
        tokio::spawn(async move {
            let Some(orch) = session.orch.upgrade() else {
                return;
            };
            let start = session.resume.lock().clone();
            if *ctl.borrow() != Flag::Pause {
                session.update(generation, |v| v.status = SessionStatus::Running);
            }
            let n = session.workflow.steps.len().max(1) as f64;
            let s1 = session.clone();
            let s2 = session.clone();
            let s3 = session.clone();
            let result = run_workflow(
                &orch,
                &session.workflow,
                &session.input,
                start,
                None,
                &mut ctl,
                move |event| {
                    s1.update(generation, |v| match event {
                        StepEvent::Started(i) => {
                            v.current_step = Some(v.steps[i].name.clone());
                            v.steps[i].status = "running".into();
                            v.steps[i].started_at = Some(now_timestamp());
                            v.progress = i as f64 / n;
                        }
                        StepEvent::Progress(i, p) => {
                            v.progress = (i as f64 + p.clamp(0.0, 1.0)) / n
                        }
                        StepEvent::Finished(i, r, took) => {
                            v.steps[i].duration_ms = Some(took);
                            match r {
                                Ok(()) => {
                                    v.steps[i].status = "completed".into();
                                    v.progress = (i + 1) as f64 / n;
                                }
                                Err(body) => {
                                    v.steps[i].status = "failed".into();
                                    v.steps[i].error = Some(body.clone());
                                }
                            }
                        }
                        StepEvent::Cancelled(i) => v.steps[i].status = "cancelled".into(),
                    });
                },
                move |paused| {
                    s2.update(generation, |v| {
                        v.status = if paused {
                            SessionStatus::Paused
                        } else {
                            SessionStatus::Running
                        };
                        if paused {
                            v.pause_requested = false;
                        }
                    });
                },
                move |checkpoint| {
                    let stored = s3.checkpoint(generation, checkpoint);
                    async move {
                        if let Some(stored) = stored {
                            // Dropped unanswered only when the session stops here (taken
                            // over, deleted): then nothing more is waited for.
                            let _ = stored.await;
                        }
                    }
                },
            )
            .await;
            if result.is_err() && orch.is_stopping() {
                // The pools are stopping under it: it stays unfinished in the store, and
                // the next start (or another host) resumes it.
                return;
            }
            let mut result_attachments = None;
            let current = session.update(generation, |v| {
                v.pause_requested = false;
                match result {
                    Ok((data, atts)) => {
                        v.status = SessionStatus::Completed;
                        v.progress = 1.0;
                        v.current_step = None;
                        v.result = Some(data);
                        v.result_attachments = atts
                            .iter()
                            .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                            .collect();
                        result_attachments = Some(atts);
                    }
                    Err(WorkflowEnd::Cancelled) => {
                        v.status = SessionStatus::Cancelled;
                        v.error = Some(ErrorBody::new(ErrorCode::Cancelled, "session cancelled"));
                    }
                    Err(WorkflowEnd::Failed(body)) => {
                        v.status = SessionStatus::Failed;
                        v.error = Some(body);
                    }
                }
            });
            if current {
                session.save(false, None, result_attachments, None);
            }
        });
    }
}

/// Writes a session's changes to the store in order, the newest view only when several
/// wait; ends (and lets the orchestrator forget the live session) once its end is stored.
async fn save_loop(session: Arc<Session>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Save>) {
    while let Some(mut save) = rx.recv().await {
        // A plain view change is overtaken by any later save.
        while save.progress.is_none()
            && save.step_attachments.is_none()
            && save.result_attachments.is_none()
        {
            match rx.try_recv() {
                Ok(mut next) => {
                    next.acks.append(&mut save.acks);
                    save = next;
                }
                Err(_) => break,
            }
        }
        let acks = std::mem::take(&mut save.acks);
        let Some(orch) = session.orch.upgrade() else {
            return;
        };
        let finished = save.view.status.is_finished();
        let mut view = save.view;
        // The attachments are stored once, as attachments.
        view.result_attachments = Vec::new();
        let status = view.status.as_str();
        let stored = match serde_json::to_string(&view) {
            Ok(view) => {
                orch.store()
                    .save_session(
                        &session.id,
                        crate::state::SessionSave {
                            epoch: session.epoch,
                            view,
                            status,
                            progress: save.progress,
                            step_attachments: save
                                .step_attachments
                                .as_ref()
                                .map(|(n, a)| (n.as_str(), a.as_slice())),
                            result_attachments: save.result_attachments.as_deref(),
                        },
                    )
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match stored {
            Ok(true) => {}
            Ok(false) => {
                // Another host took the session over (this one's lease ran out): stop.
                tracing::warn!(session = %session.id, "session taken over by another host; stopping here");
                session.control.lock().send_replace(Flag::Cancel);
                orch.forget_session(&session.id);
                return;
            }
            Err(e) => tracing::error!(session = %session.id, error = %e, "cannot store session"),
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if finished && rx.is_empty() && session.is_finished() {
            orch.forget_session(&session.id);
        }
    }
}

pub(crate) fn fresh_view(id: &str, workflow: &WorkflowConfig) -> SessionView {
    SessionView {
        id: id.to_owned(),
        workflow_id: workflow.id.clone(),
        status: SessionStatus::Pending,
        current_step: None,
        progress: 0.0,
        steps: workflow
            .steps
            .iter()
            .map(|s| StepRecord {
                name: s.name.clone(),
                status: "pending".into(),
                started_at: None,
                duration_ms: None,
                error: None,
            })
            .collect(),
        result: None,
        result_attachments: Vec::new(),
        error: None,
        created_at: now_timestamp(),
        pause_requested: false,
    }
}
