//! The pool's supervisor thread: replaces crashed and hung workers, runs health checks,
//! escalates ignored cancels, scales between `min_workers` and `max_workers`, and drives
//! the circuit breaker's probe.

use super::member::{HealthCheck, Member};
use super::status::WorkerState;
use super::{CancelEscalation, Inner, LifecycleKind};
use crate::protocol::Envelope;
use crate::worker::{SpawnError, WorkerProcess, WorkerSpec};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the supervisor looks at its workers when nothing wakes it earlier.
const TICK: Duration = Duration::from_millis(20);

/// What the supervisor decided about one worker, carried out outside its lock.
enum Action {
    /// The process is gone or must go: kill it, fail its requests, schedule a restart.
    Replace {
        process: Option<WorkerProcess>,
        kind: LifecycleKind,
        detail: String,
    },
    /// Start a health check on this connection.
    CheckHealth(Arc<crate::connection::Connection>),
    /// Start its process (restart delay over, breaker permitting).
    Start,
    /// Stop it for good (idle above `min_workers`).
    Retire(Option<WorkerProcess>),
    /// A health check fell due while a legacy worker works: say so, probe later.
    DeferHealth(Option<u32>),
}

pub(super) fn run(inner: Arc<Inner>) {
    while !inner.stopping.load(Ordering::Relaxed) {
        tick(&inner);
        let mut woken = inner.wake.0.lock();
        if !*woken {
            inner.wake.1.wait_for(&mut woken, TICK);
        }
        *woken = false;
    }
}

fn tick(inner: &Arc<Inner>) {
    let now = Instant::now();
    let members = inner.members.lock().clone();
    let live = members
        .iter()
        .filter(|m| m.state.lock().state != WorkerState::Stopped)
        .count();
    let mut retired = 0usize;
    for member in &members {
        // Twice: a worker replaced with no restart delay is started in the same tick.
        for _ in 0..2 {
            let Some(action) = inspect(inner, member, now, live - retired) else {
                break;
            };
            if matches!(action, Action::Retire(_)) {
                retired += 1;
            }
            act(inner, member, action, now);
        }
    }
    scale_up(inner, &members);
}

/// Looks at one worker under its lock and decides.
fn inspect(inner: &Arc<Inner>, member: &Arc<Member>, now: Instant, live: usize) -> Option<Action> {
    let c = &inner.config;
    let mut st = member.state.lock();
    match st.state {
        WorkerState::Ready => {
            let exited = st.process.as_mut().and_then(|p| p.has_exited());
            let broken = st.conn.as_ref().and_then(|c| c.broken());
            // SeqCst, with the spawn thread's `generation` increment and the exit hook's
            // store: if the hook of a replaced process stored after the increment, this
            // load of `generation` sees the increment, so the stale notice is ignored.
            let exited_generation = member.exited.swap(0, Ordering::SeqCst);
            let stderr_closed = exited_generation != 0
                && exited_generation == member.generation.load(Ordering::SeqCst);
            if exited.is_some() || broken.is_some() || stderr_closed {
                let detail = match (exited, broken) {
                    (Some(status), _) => format!("process exited: {status}"),
                    (None, Some(why)) => why,
                    (None, None) => "process closed its stderr (exited)".to_owned(),
                };
                st.state = WorkerState::Restarting;
                st.conn = None;
                st.health = None;
                return Some(Action::Replace {
                    process: st.process.take(),
                    kind: LifecycleKind::Crashed,
                    detail,
                });
            }
            let conn = st.conn.clone()?;
            if conn.in_flight() > 0 {
                st.busy_at = now;
            }
            if c.cancel_escalation == CancelEscalation::Restart {
                if let Some(age) = conn.oldest_abandoned() {
                    if age > c.cancel_grace {
                        st.state = WorkerState::Unhealthy;
                        st.conn = None;
                        st.health = None;
                        let detail = format!(
                            "a cancelled request was not answered within {:?}",
                            c.cancel_grace
                        );
                        return Some(Action::Replace {
                            process: st.process.take(),
                            kind: LifecycleKind::Unhealthy,
                            detail,
                        });
                    }
                }
            }
            if let Some(check) = st.health.as_mut() {
                match check.pending.poll_done() {
                    Some(Ok(_)) => {
                        st.health = None;
                        st.next_health = now + c.health_interval;
                    }
                    Some(Err(e)) => {
                        st.state = WorkerState::Unhealthy;
                        st.conn = None;
                        st.health = None;
                        let detail = format!("health check failed: {e}");
                        return Some(Action::Replace {
                            process: st.process.take(),
                            kind: LifecycleKind::Unhealthy,
                            detail,
                        });
                    }
                    None if now.saturating_duration_since(check.started) > c.health_timeout => {
                        st.state = WorkerState::Unhealthy;
                        st.conn = None;
                        st.health = None;
                        let detail =
                            format!("no answer to a health check within {:?}", c.health_timeout);
                        return Some(Action::Replace {
                            process: st.process.take(),
                            kind: LifecycleKind::Unhealthy,
                            detail,
                        });
                    }
                    None => {}
                }
                return None;
            }
            if live > c.min_workers
                && conn.in_flight() == 0
                && now.saturating_duration_since(st.busy_at) > c.idle_timeout
            {
                st.state = WorkerState::Stopping;
                st.conn = None;
                return Some(Action::Retire(st.process.take()));
            }
            if now >= st.next_health {
                st.next_health = now + c.health_interval;
                // A legacy worker reads one line at a time and answers in order: a probe
                // sent while it works waits behind the request, and a long request would
                // look like a hang. So it is probed only while idle; a legacy worker hung
                // on a request is replaced when the request's deadline passes and it
                // ignores the cancel for `cancel_grace`.
                if conn.dialect() == crate::worker::Dialect::Legacy && conn.in_flight() > 0 {
                    return Some(Action::DeferHealth(st.pid));
                }
                return Some(Action::CheckHealth(conn));
            }
            None
        }
        WorkerState::Restarting if st.restart_at.is_some_and(|at| now >= at) => {
            drop(st);
            let allowed = inner.dispatch.lock().breaker.allows_start(now);
            if !allowed {
                return None;
            }
            let mut st = member.state.lock();
            st.restart_at = None;
            st.state = WorkerState::Starting;
            Some(Action::Start)
        }
        _ => None,
    }
}

fn act(inner: &Arc<Inner>, member: &Arc<Member>, action: Action, now: Instant) {
    match action {
        Action::Replace {
            process,
            kind,
            detail,
        } => {
            let pid = process.as_ref().map(WorkerProcess::pid);
            // Killing closes the link: every request still on it gets `worker_crashed` now.
            drop(process);
            inner.publish_member(member, kind, pid, detail.clone());
            let transition = inner.dispatch.lock().breaker.record_failure(now);
            inner.publish_transition(transition);
            schedule_restart(inner, member, detail, now, false);
            inner.dispatch.lock().queue.wake_all();
        }
        Action::CheckHealth(conn) => {
            let request =
                Envelope::request("", crate::protocol::OP_HEALTH, serde_json::Value::Null);
            let deadline = Instant::now() + inner.config.health_timeout;
            match conn.start_async(request, &[], Some(deadline)) {
                Ok(pending) => {
                    let mut st = member.state.lock();
                    if st.state == WorkerState::Ready {
                        st.health = Some(HealthCheck {
                            pending,
                            started: Instant::now(),
                        });
                    }
                }
                Err(e) => tracing::debug!(worker = %member.id, error = %e, "health check not sent"),
            }
        }
        Action::Start => {
            spawn_member(inner, member.clone());
        }
        Action::DeferHealth(pid) => {
            inner.publish_member(
                member,
                LifecycleKind::HealthDeferred,
                pid,
                "legacy worker busy: probed once idle".into(),
            );
        }
        Action::Retire(process) => {
            let pid = process.as_ref().map(WorkerProcess::pid);
            if let Some(p) = process {
                std::thread::spawn(move || {
                    let _ = p.shutdown();
                });
            }
            member.state.lock().state = WorkerState::Stopped;
            inner.members.lock().retain(|m| !Arc::ptr_eq(m, member));
            inner.publish_member(member, LifecycleKind::Stopped, pid, "idle".into());
        }
    }
}

fn schedule_restart(
    inner: &Arc<Inner>,
    member: &Arc<Member>,
    detail: String,
    now: Instant,
    immediate: bool,
) {
    let delay = {
        let mut st = member.state.lock();
        let ready_since = st.ready_since.take();
        let delay = if immediate {
            Duration::ZERO
        } else {
            st.backoff.next_delay(ready_since, now)
        };
        st.state = WorkerState::Restarting;
        st.restart_at = Some(now + delay);
        st.restarts += 1;
        st.last_error = Some(detail);
        st.pid = None;
        st.telemetry = None;
        delay
    };
    inner.publish_member(
        member,
        LifecycleKind::Restarted,
        None,
        format!("replacement in {delay:?}"),
    );
}

/// Starts `member`'s process on its own thread (the handshake can take a while).
/// The thread returns the start's failure, if it failed.
pub(super) fn spawn_member(
    inner: &Arc<Inner>,
    member: Arc<Member>,
) -> Option<JoinHandle<Option<SpawnError>>> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut spec: WorkerSpec = inner.spec.clone();
    spec.worker_id = member.id.clone();
    // Last, so that the assignment wins over the spec's own variables of the same names.
    if let Some(device) = &member.device {
        spec.env.extend(super::config::device_env(device));
    }
    let inner = inner.clone();
    std::thread::Builder::new()
        .name(format!("spawn-{}", member.id))
        .spawn(move || {
            member.state.lock().state = WorkerState::Starting;
            let hook_target = weak.clone();
            let on_freed: crate::connection::FreedHook = Arc::new(move || {
                if let Some(inner) = hook_target.upgrade() {
                    inner.capacity_changed();
                }
            });
            // SeqCst: ordered with the supervisor's check (see there).
            let generation = member.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let (exit_target, exit_member) = (weak.clone(), Arc::downgrade(&member));
            let on_exit: crate::worker::ExitHook = Arc::new(move || {
                if let (Some(inner), Some(member)) = (exit_target.upgrade(), exit_member.upgrade())
                {
                    member.exited.store(generation, Ordering::SeqCst);
                    inner.nudge_supervisor();
                }
            });
            let hooks = crate::worker::WorkerHooks {
                on_freed: Some(on_freed),
                on_exit: Some(on_exit),
            };
            match WorkerProcess::spawn_with_hooks(spec, hooks) {
                Ok(process) => {
                    let pid = process.pid();
                    inner.publish_member(&member, LifecycleKind::Started, Some(pid), String::new());
                    if inner.stopping.load(Ordering::Relaxed) {
                        drop(process);
                        return None;
                    }
                    {
                        let mut st = member.state.lock();
                        let now = Instant::now();
                        st.conn = Some(process.connection().clone());
                        st.process = Some(process);
                        st.pid = Some(pid);
                        st.state = WorkerState::Ready;
                        st.ready_since = Some(now);
                        st.busy_at = now;
                        st.next_health = now + inner.config.health_interval;
                    }
                    inner.publish_member(&member, LifecycleKind::Ready, Some(pid), String::new());
                    let transition = inner.dispatch.lock().breaker.record_ready();
                    inner.publish_transition(transition);
                    inner.capacity_changed();
                    None
                }
                Err(e) => {
                    let now = Instant::now();
                    let detail = format!("start failed: {e}");
                    inner.publish_member(&member, LifecycleKind::Crashed, None, detail.clone());
                    let transition = inner.dispatch.lock().breaker.record_failure(now);
                    inner.publish_transition(transition);
                    schedule_restart(&inner, &member, detail, now, false);
                    inner.dispatch.lock().queue.wake_all();
                    Some(e)
                }
            }
        })
        .ok()
}

/// Grows the pool by one worker when callers queue and no worker has room.
fn scale_up(inner: &Arc<Inner>, members: &[Arc<Member>]) {
    let c = &inner.config;
    let depth = inner.dispatch.lock().queue.len();
    if depth < c.scale_up_queue_depth.max(1) {
        return;
    }
    let mut live = 0;
    for m in members {
        let st = m.state.lock();
        match st.state {
            WorkerState::Stopped | WorkerState::Stopping => {}
            // Something is already coming up; let it arrive first.
            WorkerState::Starting | WorkerState::Restarting => return,
            _ => live += 1,
        }
    }
    if live >= c.max_workers || !inner.dispatch.lock().breaker.allows_calls(Instant::now()) {
        return;
    }
    let member = inner.add_member();
    spawn_member(inner, member);
}

/// Kills worker `id` and starts a replacement at once.
pub(super) fn restart_now(inner: &Arc<Inner>, id: &str, why: &str) -> bool {
    let member = inner.members.lock().iter().find(|m| m.id == id).cloned();
    let Some(member) = member else { return false };
    let process = {
        let mut st = member.state.lock();
        st.conn = None;
        st.health = None;
        st.state = WorkerState::Restarting;
        st.process.take()
    };
    let pid = process.as_ref().map(WorkerProcess::pid);
    drop(process);
    inner.publish_member(&member, LifecycleKind::Stopped, pid, why.to_owned());
    schedule_restart(inner, &member, why.to_owned(), Instant::now(), true);
    inner.nudge_supervisor();
    true
}
