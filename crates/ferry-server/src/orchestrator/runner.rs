//! The host's background task: claims batch items and abandoned sessions, renews its
//! leases, and applies cancels and controls asked on other hosts.
//!
//! It wakes when a batch starts or an item ends here (so a batch's next item starts at
//! once), and every third of `lease_ms` (to renew leases and to find work other hosts
//! left: a new batch started elsewhere, an expired lease).

use super::batch::{run_claimed, StoredSpec};
use super::session::{fresh_view, Flag, Resume, Session, SessionStatus, SessionView};
use super::RunningItem;
use super::{parse_stored, Control, Orchestrator, OrchestratorError};
use crate::config::WorkflowConfig;
use crate::state::StoredSession;
use ferry::protocol::{ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tokio::sync::watch;

/// Starts the runner of `orch`; it ends when the orchestrator is dropped.
pub(super) fn spawn(orch: &Arc<Orchestrator>) {
    let weak = Arc::downgrade(orch);
    tokio::spawn(async move {
        let (period, wake) = match weak.upgrade() {
            Some(o) => (o.store.lease() / 3, o.wake.clone()),
            None => return,
        };
        let mut tick = tokio::time::interval(period.max(std::time::Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Finished work is pruned when work is created, and here once a minute, so a host
        // that only serves GETs still drops what is past `keep_finished_s`.
        let mut last_prune = std::time::Instant::now();
        loop {
            let Some(orch) = weak.upgrade() else { return };
            if let Err(e) = round(&orch, &weak).await {
                tracing::error!(error = %e, "state store round failed; retrying");
            }
            if last_prune.elapsed() >= std::time::Duration::from_secs(60) {
                last_prune = std::time::Instant::now();
                if let Err(e) = orch.prune().await {
                    tracing::error!(error = %e, "pruning finished work failed");
                }
            }
            drop(orch);
            tokio::select! {
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
        }
    });
}

/// One round: renew, pick up cancels and controls, claim and start work.
async fn round(
    orch: &Arc<Orchestrator>,
    weak: &Weak<Orchestrator>,
) -> Result<(), OrchestratorError> {
    let store = orch.store();
    store.renew_leases().await?;
    for (batch, index) in store.cancel_requests().await? {
        if let Some(item) = orch.running_items.lock().get(&(batch, index)) {
            item.cancel.send_replace(Flag::Cancel);
        }
    }
    for (id, control) in store.take_controls().await? {
        let live = orch.live_sessions.lock().get(&id).cloned();
        if let (Some(session), Some(control)) = (live, Control::from_name(&control)) {
            let _ = session.control(control);
        }
    }
    for stored in store.claim_sessions().await? {
        let id = stored.id.clone();
        if let Err(e) = resume_session(orch, stored).await {
            tracing::error!(session = %id, error = %e, "cannot resume session");
        }
    }
    // What this round grants, per worker type, on top of what already runs here.
    let mut granted: HashMap<String, usize> = HashMap::new();
    let items = store
        .claim_items(|spec, wanted| {
            let Ok(spec) = serde_json::from_str::<StoredSpec>(spec) else {
                // Unreadable: claimed, so that running it stores the error.
                return wanted.min(1);
            };
            let Some(worker_type) = orch.target_worker_type(&spec.target) else {
                return wanted.min(1);
            };
            let taken = granted.entry(worker_type.clone()).or_insert(0);
            let room = orch.item_room(&worker_type).saturating_sub(*taken);
            let grant = wanted.min(room);
            *taken += grant;
            grant
        })
        .await?;
    if !items.is_empty() {
        tracing::debug!(claimed = items.len(), "batch items claimed");
    }
    for item in items {
        let (tx, rx) = watch::channel(Flag::Run);
        let key = (item.batch_id.clone(), item.index);
        let worker_type = serde_json::from_str::<StoredSpec>(&item.spec)
            .ok()
            .and_then(|s| orch.target_worker_type(&s.target))
            .unwrap_or_default();
        orch.running_items.lock().insert(
            key.clone(),
            RunningItem {
                cancel: tx,
                worker_type,
            },
        );
        let weak = weak.clone();
        tokio::spawn(async move {
            let Some(orch) = weak.upgrade() else { return };
            if let Err(e) = run_claimed(&orch, item, rx).await {
                tracing::error!(batch = %key.0, item = key.1, error = %e, "batch item not stored");
            }
            orch.running_items.lock().remove(&key);
            orch.wake.notify_one();
        });
    }
    Ok(())
}

/// Takes over a session whose host died: resumes it at the step that was running when
/// that step's operation is idempotent, else ends it `interrupted`.
async fn resume_session(
    orch: &Arc<Orchestrator>,
    stored: StoredSession,
) -> Result<(), OrchestratorError> {
    let workflow: WorkflowConfig = parse_stored("session workflow", &stored.workflow)?;
    let input: serde_json::Value = parse_stored("session input", &stored.input)?;
    let mut view: SessionView = parse_stored("session view", &stored.view)?;
    let mut resume: Resume = if stored.progress == "{}" {
        Resume::fresh(&input)
    } else {
        parse_stored("session progress", &stored.progress)?
    };
    for step in workflow.steps.iter().take(resume.step) {
        let atts = orch
            .store()
            .step_attachments(&stored.id, &step.name)
            .await?;
        resume.attachments.insert(step.name.clone(), atts);
    }
    if resume.step == 0 && view.steps.iter().all(|s| s.status == "pending") {
        view = SessionView {
            created_at: view.created_at.clone(),
            ..fresh_view(&stored.id, &workflow)
        };
    }
    let interrupted_step = view
        .steps
        .get(resume.step)
        .filter(|s| s.status == "running")
        .and_then(|_| workflow.steps.get(resume.step));
    if let Some(step) = interrupted_step {
        if !orch.is_idempotent(&step.worker_type, &step.operation) {
            let body = ErrorBody::new(
                ErrorCode::WorkerCrashed,
                format!(
                    "interrupted: the host running step `{}` stopped, and operation `{}` of \
                     `{}` is not listed in `idempotent_operations`, so it was not run again",
                    step.name, step.operation, step.worker_type
                ),
            );
            if let Some(record) = view.steps.get_mut(resume.step) {
                record.status = "interrupted".into();
                record.error = Some(body.clone());
            }
            view.status = SessionStatus::Interrupted;
            view.error = Some(body);
            view.pause_requested = false;
            let text = serde_json::to_string(&view)
                .map_err(|e| OrchestratorError::Invalid(e.to_string()))?;
            orch.store()
                .save_session(
                    &stored.id,
                    crate::state::SessionSave {
                        epoch: stored.epoch,
                        view: text,
                        status: "interrupted",
                        progress: None,
                        step_attachments: None,
                        result_attachments: None,
                    },
                )
                .await?;
            return Ok(());
        }
    }
    let flag = if view.status == SessionStatus::Paused {
        Flag::Pause
    } else {
        Flag::Run
    };
    let id = stored.id.clone();
    let session = Session::start(
        orch.clone(),
        id.clone(),
        workflow,
        input,
        view,
        stored.epoch,
        resume,
        flag,
    );
    orch.live_sessions.lock().insert(id, session);
    Ok(())
}
