//! A pool of workers of one type: dispatch, queueing, retries, supervision.
//!
//! - **Dispatch**: a call goes to the least-loaded ready worker with fewer than
//!   `max_in_flight` requests. With none free, the caller waits in a bounded priority
//!   queue (high, normal, low; FIFO within a level); a full queue answers `overloaded` at
//!   once. The caller then does its own I/O: a synchronous caller on a free worker sends
//!   and receives on its own thread, with no thread hop.
//! - **Retries**: only for retryable errors of idempotent operations, with backoff, while
//!   the deadline allows and the retry budget lasts.
//! - **Supervision** (a thread per pool): crashed workers are replaced after an
//!   exponential backoff; health checks catch hung workers; a worker ignoring a cancel is
//!   restarted; the pool grows on queueing and shrinks when idle; a circuit breaker fails
//!   calls fast while the type keeps failing. Lifecycle events go to subscribers.
//!
//! ```no_run
//! use ferry::pool::{Pool, PoolConfig};
//! use ferry::worker::{Call, WorkerSpec};
//!
//! let spec = WorkerSpec::new("echo", "ferry", ["worker", "echo"]);
//! let pool = Pool::start(spec, PoolConfig::default().workers(2, 2))?;
//! let reply = pool.send(Call::new("echo").data(serde_json::json!({"x": 1})))?;
//! assert_eq!(reply.data["x"], 1);
//! pool.shutdown();
//! # Ok::<(), ferry::pool::PoolError>(())
//! ```

mod attempt;
mod backoff;
mod breaker;
mod budget;
mod config;
mod dispatch;
mod error;
mod events;
mod member;
mod queue;
mod retry;
mod send;
mod status;
mod supervisor;

pub use breaker::BreakerState;
pub use config::{CancelEscalation, ConfigError, PoolConfig};
pub use error::PoolError;
pub use events::{LifecycleEvent, LifecycleKind};
pub use status::{WorkerState, WorkerStatus, WorkerTelemetry};

use crate::connection::Fill;
use crate::protocol::{Envelope, Stamp};
use crate::worker::{CallError, CallOptions, Response, ResponseRef, WorkerSpec};
use backoff::Backoff;
use breaker::{Breaker, Transition};
use budget::RetryBudget;
use dispatch::Dispatch;
use member::Member;
use parking_lot::{Condvar, Mutex};
use queue::WaitQueue;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub(crate) struct Inner {
    spec: WorkerSpec,
    config: PoolConfig,
    dispatch: Mutex<Dispatch>,
    members: Mutex<Vec<Arc<Member>>>,
    next_index: AtomicUsize,
    /// Where the next least-loaded search starts, so ties rotate over the workers.
    rotation: AtomicUsize,
    events: broadcast::Sender<LifecycleEvent>,
    /// Set once by `shutdown`/drop; read by callers and the supervisor. Relaxed is enough:
    /// the dispatch lock orders everything that acts on it.
    stopping: AtomicBool,
    wake: (Mutex<bool>, Condvar),
}

/// A pool of workers of one type. Dropping it kills its workers; [`shutdown`](Self::shutdown)
/// stops them gracefully.
pub struct Pool {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("worker_type", &self.inner.spec.worker_type)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `config.min_workers` workers from `spec` (waiting until each is ready or has
    /// failed to start) and the supervisor. Failed workers are retried by the supervisor,
    /// unless none got ready under [`PoolConfig::strict_start`]: then this fails with
    /// [`PoolError::Spawn`].
    pub fn start(spec: WorkerSpec, config: PoolConfig) -> Result<Pool, PoolError> {
        config.validate()?;
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            dispatch: Mutex::new(Dispatch {
                queue: WaitQueue::new(config.queue_capacity),
                breaker: Breaker::new(config.breaker_failure_threshold, config.breaker_open),
                budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_min),
            }),
            members: Mutex::new(Vec::new()),
            next_index: AtomicUsize::new(0),
            rotation: AtomicUsize::new(0),
            events,
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            spec,
            config,
        });
        let starts: Vec<_> = (0..inner.config.min_workers)
            .map(|_| {
                let member = inner.add_member();
                supervisor::spawn_member(&inner, member)
            })
            .collect();
        let mut ready = 0;
        let mut first_failure = None;
        for handle in starts.into_iter().flatten() {
            match handle.join() {
                Ok(None) => ready += 1,
                Ok(Some(e)) => first_failure = first_failure.or(Some(e)),
                Err(_) => {}
            }
        }
        if inner.config.strict_start && ready == 0 {
            if let Some(e) = first_failure {
                return Err(PoolError::Spawn(e));
            }
        }
        let sup = inner.clone();
        let supervisor = std::thread::Builder::new()
            .name(format!("supervisor-{}", inner.spec.worker_type))
            .spawn(move || supervisor::run(sup))
            .map_err(|e| {
                PoolError::Call(CallError::Transport(crate::transport::TransportError::Io(
                    e,
                )))
            })?;
        Ok(Pool {
            inner,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// The worker type.
    pub fn worker_type(&self) -> &str {
        &self.inner.spec.worker_type
    }

    /// The built-in transport its workers are reached by (the spec's `transport`; a pool
    /// of a custom transport reports its name in [`transport_name`](Self::transport_name)).
    pub fn transport(&self) -> crate::transport::TransportKind {
        self.inner.spec.transport
    }

    /// The name of the transport its workers are reached by, custom ones included.
    pub fn transport_name(&self) -> &str {
        self.inner.spec.effective_transport().name()
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Subscribes to lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.inner.events.subscribe()
    }

    /// A snapshot of every worker.
    pub fn status(&self) -> Vec<WorkerStatus> {
        let members = self.inner.members.lock().clone();
        members
            .iter()
            .map(|m| m.status(&self.inner.spec.worker_type))
            .collect()
    }

    /// Callers waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.inner.dispatch.lock().queue.len()
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.dispatch.lock().breaker.state(Instant::now())
    }

    /// Whether at least one worker is ready.
    pub fn is_ready(&self) -> bool {
        self.status().iter().any(|s| s.state == WorkerState::Ready)
    }

    /// Waits until at least one worker is ready, up to `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.is_ready()
    }

    /// Restarts worker `id` now (kill, then start a new process under the same id).
    /// Returns `false` if there is no such worker.
    pub fn restart(&self, id: &str) -> bool {
        supervisor::restart_now(&self.inner, id, "restart requested")
    }

    /// Calls a worker synchronously: dispatch, send and receive happen on this thread.
    /// `request.priority` and `request.deadline_ms` are honoured (the pool's
    /// `request_timeout` when absent); `on_event` sees each event.
    pub fn call(
        &self,
        request: Envelope,
        attachments: &[&[u8]],
        on_event: impl FnMut(&Envelope),
    ) -> Result<Response, PoolError> {
        self.call_with(request, attachments, &CallOptions::default(), on_event)
    }

    /// [`call`](Self::call) with explicit options.
    pub fn call_with(
        &self,
        request: Envelope,
        attachments: &[&[u8]],
        options: &CallOptions,
        on_event: impl FnMut(&Envelope),
    ) -> Result<Response, PoolError> {
        let mut on_event = on_event;
        let inner = &self.inner;
        let mut blocking = attempt::Blocking {
            attachments,
            on_event: |e: &Envelope| {
                inner.observe_event(e);
                on_event(e)
            },
        };
        attempt::complete_now(attempt::run(&self.inner, &request, options, &mut blocking))
    }

    /// Like [`call_with`](Self::call_with), but the answer is not copied out of the link:
    /// `f` sees it in place (on shm, its data decoded inside the ring and its attachments
    /// as slices of it) and its result is returned; see
    /// [`Pending::wait_in_place`](crate::connection::Pending::wait_in_place). Retries
    /// happen as for `call_with`; `f` runs once, on the successful answer.
    ///
    /// ```no_run
    /// # use ferry::prelude::*;
    /// # use ferry::protocol::Envelope;
    /// # fn demo(pool: &Pool, image: &[u8]) -> Result<(), PoolError> {
    /// let request = Envelope::request("", "echo", serde_json::Value::Null);
    /// let same = pool.call_in_place(request, &[image], &CallOptions::default(), |_| {}, |answer| {
    ///     answer.attachments.first() == Some(&image)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn call_in_place<R>(
        &self,
        request: Envelope,
        attachments: &[&[u8]],
        options: &CallOptions,
        on_event: impl FnMut(&Envelope),
        f: impl FnOnce(ResponseRef<'_>) -> R,
    ) -> Result<R, PoolError> {
        let mut on_event = on_event;
        let inner = &self.inner;
        let mut blocking = attempt::BlockingInPlace {
            attachments,
            on_event: |e: &Envelope| {
                inner.observe_event(e);
                on_event(e)
            },
            visit: Some(f),
        };
        attempt::complete_now(attempt::run(&self.inner, &request, options, &mut blocking))
    }

    /// Calls a worker from async code; `on_event` sees each event. The request is sent from
    /// this task, which then reads the link itself for the pool's `async_lead`: a quick
    /// answer costs no thread hop. After that the connection's reader thread delivers the
    /// answer (one wake-up).
    pub async fn call_async(
        &self,
        request: Envelope,
        attachments: Vec<Vec<u8>>,
        options: CallOptions,
        on_event: impl FnMut(&Envelope) + Send,
    ) -> Result<Response, PoolError> {
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        let mut on_event = on_event;
        let inner = &self.inner;
        let mut awaiting = attempt::Awaiting {
            lead: inner.config.async_lead,
            attachments: &parts,
            on_event: |e: &Envelope| {
                inner.observe_event(e);
                on_event(e)
            },
        };
        attempt::run(&self.inner, &request, &options, &mut awaiting).await
    }

    /// Stops gracefully: waiting callers get `unavailable`, each worker gets the `shutdown`
    /// operation (then SIGTERM, then SIGKILL after its grace period), and is reaped.
    /// Calls after this fail with `unavailable`. Idempotent.
    pub fn shutdown(&self) {
        self.stop(true);
    }

    fn stop(&self, graceful: bool) {
        let inner = &self.inner;
        if inner.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        inner.dispatch.lock().queue.wake_all();
        inner.nudge_supervisor();
        let supervisor = self.supervisor.lock().take();
        if let Some(h) = supervisor {
            let _ = h.join();
        }
        let members = std::mem::take(&mut *inner.members.lock());
        let stops: Vec<_> = members
            .into_iter()
            .map(|m| {
                let process = {
                    let mut st = m.state.lock();
                    st.state = WorkerState::Stopped;
                    st.conn = None;
                    st.health = None;
                    st.process.take()
                };
                let inner = inner.clone();
                std::thread::spawn(move || {
                    if let Some(p) = process {
                        let pid = p.pid();
                        if graceful {
                            let _ = p.shutdown();
                        } else {
                            drop(p);
                        }
                        inner.publish_member(
                            &m,
                            LifecycleKind::Stopped,
                            Some(pid),
                            "pool stopped".into(),
                        );
                    }
                })
            })
            .collect();
        for s in stops {
            let _ = s.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// The device for a new worker: the one the fewest live workers hold, the first listed
/// among equals (round-robin as workers are added); `None` without a device list.
fn least_used_device(devices: &[String], members: &[Arc<Member>]) -> Option<String> {
    devices
        .iter()
        .enumerate()
        .min_by_key(|(i, d)| {
            let holders = members
                .iter()
                .filter(|m| {
                    m.device.as_ref() == Some(*d) && m.state.lock().state != WorkerState::Stopped
                })
                .count();
            (holders, *i)
        })
        .map(|(_, d)| d.clone())
}

impl Inner {
    fn add_member(self: &Arc<Self>) -> Arc<Member> {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let c = &self.config;
        let backoff = Backoff::new(
            c.restart_backoff,
            c.restart_backoff_max,
            c.restart_reset_after,
        );
        let mut members = self.members.lock();
        let device = least_used_device(&c.devices, &members);
        let member = Member::new(
            format!("{}-{index}", self.spec.worker_type),
            device,
            backoff,
        );
        members.push(member.clone());
        member
    }

    /// Publishes a lifecycle event of `member`, with its device.
    fn publish_member(
        &self,
        member: &Member,
        kind: LifecycleKind,
        pid: Option<u32>,
        detail: String,
    ) {
        self.send_event(LifecycleEvent {
            worker_type: self.spec.worker_type.clone(),
            worker_id: member.id.clone(),
            kind,
            pid,
            detail,
            device: member.device.clone(),
            data: None,
        });
    }

    /// Looks at an event a worker sent during a request: a `status_change` is kept as its
    /// worker's telemetry and published as a lifecycle event. The worker is the one its
    /// data names (`worker_id`, the `FERRY_WORKER_ID` the host gave it); one naming no
    /// worker of this pool is ignored.
    fn observe_event(&self, event: &Envelope) {
        if event.event_name.as_deref() != Some(crate::protocol::EVENT_STATUS_CHANGE) {
            return;
        }
        let Some(data) = event.data.as_ref() else {
            return;
        };
        let (worker_id, telemetry) = WorkerTelemetry::from_event(data);
        let Some(worker_id) = worker_id else {
            return;
        };
        let member = self
            .members
            .lock()
            .iter()
            .find(|m| m.id == worker_id)
            .cloned();
        let Some(member) = member else {
            tracing::debug!(worker_type = %self.spec.worker_type, %worker_id, "status_change of no worker of this pool");
            return;
        };
        let pid = {
            let mut st = member.state.lock();
            st.telemetry = Some(telemetry.clone());
            st.pid
        };
        self.send_event(LifecycleEvent {
            worker_type: self.spec.worker_type.clone(),
            worker_id: member.id.clone(),
            kind: LifecycleKind::StatusChange,
            pid,
            detail: telemetry.status.clone().unwrap_or_default(),
            device: member.device.clone(),
            data: Some(telemetry),
        });
    }

    /// Publishes an event of no worker (the breaker's).
    fn publish(&self, worker_id: &str, kind: LifecycleKind, pid: Option<u32>, detail: String) {
        self.send_event(LifecycleEvent {
            worker_type: self.spec.worker_type.clone(),
            worker_id: worker_id.to_owned(),
            kind,
            pid,
            detail,
            device: None,
            data: None,
        });
    }

    /// Logs `event` and sends it to the subscribers.
    fn send_event(&self, event: LifecycleEvent) {
        let LifecycleEvent {
            worker_id,
            kind,
            pid,
            detail,
            device,
            ..
        } = &event;
        match kind {
            LifecycleKind::Crashed | LifecycleKind::Unhealthy | LifecycleKind::BreakerOpened => {
                tracing::warn!(worker_type = %self.spec.worker_type, worker = %worker_id, ?kind, ?pid, ?device, %detail, "worker lifecycle")
            }
            LifecycleKind::StatusChange | LifecycleKind::HealthDeferred => {
                tracing::debug!(worker_type = %self.spec.worker_type, worker = %worker_id, ?kind, ?pid, ?device, %detail, "worker lifecycle")
            }
            _ => {
                tracing::info!(worker_type = %self.spec.worker_type, worker = %worker_id, ?kind, ?pid, ?device, %detail, "worker lifecycle")
            }
        }
        let _ = self.events.send(event);
    }

    fn publish_transition(&self, t: Transition) {
        match t {
            Transition::Opened => self.publish(
                "",
                LifecycleKind::BreakerOpened,
                None,
                "consecutive failures".into(),
            ),
            Transition::Closed => self.publish(
                "",
                LifecycleKind::BreakerClosed,
                None,
                "probe succeeded".into(),
            ),
            Transition::None => {}
        }
    }

    fn nudge_supervisor(&self) {
        *self.wake.0.lock() = true;
        self.wake.1.notify_one();
    }

    /// A worker has room again (or a new one is ready): let the head waiter try.
    pub(crate) fn capacity_changed(&self) {
        self.dispatch.lock().queue.wake_head();
    }

    /// The fields a request leaves unset, filled on the wire only: the send time and this
    /// pool's worker type.
    fn fill<'a>(&'a self, stamp: Option<&'a Stamp>) -> Fill<'a> {
        Fill {
            timestamp: stamp.map(Stamp::as_str),
            worker_type: Some(&self.spec.worker_type),
        }
    }
}
