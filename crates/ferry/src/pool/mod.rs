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

mod backoff;
mod breaker;
mod budget;
mod config;
mod error;
mod events;
mod member;
mod queue;
mod send;
mod status;
mod supervisor;

pub use breaker::BreakerState;
pub use config::{CancelEscalation, ConfigError, PoolConfig};
pub use error::PoolError;
pub use events::{LifecycleEvent, LifecycleKind};
pub use status::{WorkerState, WorkerStatus};

use crate::connection::{Fill, Incoming, Reservation};
use crate::protocol::{Envelope, ErrorCode, Priority, Stamp};
use crate::worker::{CallError, CallOptions, Response, WorkerSpec};
use backoff::Backoff;
use breaker::{Breaker, Transition};
use budget::RetryBudget;
use member::Member;
use parking_lot::{Condvar, Mutex};
use queue::{Ticket, WaitQueue};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// State guarded by the dispatch lock.
struct Dispatch {
    queue: WaitQueue,
    breaker: Breaker,
    budget: RetryBudget,
}

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

    /// The transport its workers are reached by.
    pub fn transport(&self) -> crate::transport::TransportKind {
        self.inner.spec.transport
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
        mut on_event: impl FnMut(&Envelope),
    ) -> Result<Response, PoolError> {
        let inner = &self.inner;
        let (deadline, limit) = inner.deadline_for(&request, options);
        let priority = request.priority.unwrap_or_default();
        let retryable_op = inner.may_retry(&request);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (member, reservation) = inner.acquire_sync(priority, deadline)?;
            // Sent from a view, so a retry resends the same envelope without a copy.
            let stamp = request.timestamp.is_none().then(Stamp::now);
            let result = reservation
                .send_filled(
                    &request,
                    inner.fill(stamp.as_ref()),
                    attachments,
                    Some(deadline),
                )
                .and_then(|pending| pending.wait(&mut on_event));
            match inner.after_call(&member, result, retryable_op, attempt, deadline, limit) {
                Outcome::Done(r) => return r,
                Outcome::Retry(delay) => std::thread::sleep(delay),
            }
        }
    }

    /// Calls a worker from async code; `on_event` sees each event. The request is sent from
    /// this task; the connection's reader thread delivers the answer (one wake-up).
    pub async fn call_async(
        &self,
        request: Envelope,
        attachments: Vec<Vec<u8>>,
        options: CallOptions,
        mut on_event: impl FnMut(&Envelope) + Send,
    ) -> Result<Response, PoolError> {
        let inner = &self.inner;
        let (deadline, limit) = inner.deadline_for(&request, &options);
        let priority = request.priority.unwrap_or_default();
        let retryable_op = inner.may_retry(&request);
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (member, reservation) = inner.acquire_async(priority, deadline).await?;
            let stamp = request.timestamp.is_none().then(Stamp::now);
            let sent = reservation.send_async_filled(
                &request,
                inner.fill(stamp.as_ref()),
                &parts,
                Some(deadline),
            );
            let result = match sent {
                Err(e) => Err(e),
                Ok(mut pending) => {
                    let waited = tokio::time::timeout_at(deadline.into(), async {
                        loop {
                            match pending.next_async().await {
                                Some(Incoming::Event(e)) => on_event(&e),
                                Some(Incoming::Done(r)) => return r,
                                None => {
                                    return Err(CallError::WorkerCrashed {
                                        status: "answer stream ended".into(),
                                    })
                                }
                            }
                        }
                    })
                    .await;
                    match waited {
                        Ok(r) => r,
                        Err(_) => {
                            pending.cancel();
                            Err(CallError::Timeout(limit))
                        }
                    }
                }
            };
            match inner.after_call(&member, result, retryable_op, attempt, deadline, limit) {
                Outcome::Done(r) => return r,
                Outcome::Retry(delay) => tokio::time::sleep(delay).await,
            }
        }
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
                        inner.publish(
                            &m.id,
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

// Why allowed: a short-lived stack value returned once per call; boxing the large variant
// would add an allocation to every call's hot path.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Done(Result<Response, PoolError>),
    Retry(Duration),
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
        let member = Member::new(format!("{}-{index}", self.spec.worker_type), backoff);
        self.members.lock().push(member.clone());
        member
    }

    fn publish(&self, worker_id: &str, kind: LifecycleKind, pid: Option<u32>, detail: String) {
        match kind {
            LifecycleKind::Crashed | LifecycleKind::Unhealthy | LifecycleKind::BreakerOpened => {
                tracing::warn!(worker_type = %self.spec.worker_type, worker = %worker_id, ?kind, ?pid, %detail, "worker lifecycle")
            }
            _ => {
                tracing::info!(worker_type = %self.spec.worker_type, worker = %worker_id, ?kind, ?pid, %detail, "worker lifecycle")
            }
        }
        let _ = self.events.send(LifecycleEvent {
            worker_type: self.spec.worker_type.clone(),
            worker_id: worker_id.to_owned(),
            kind,
            pid,
            detail,
        });
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

    /// When the call must be answered, and the limit it was given (which a timeout
    /// reports: the caller's own deadline, not the pool's default).
    fn deadline_for(&self, request: &Envelope, options: &CallOptions) -> (Instant, Duration) {
        let timeout = options
            .timeout
            .or(request.deadline_ms.map(Duration::from_millis))
            .unwrap_or(self.config.request_timeout);
        (Instant::now() + timeout, timeout)
    }

    fn may_retry(&self, request: &Envelope) -> bool {
        self.config.retry_max_attempts > 1
            && self
                .config
                .is_idempotent(request.operation.as_deref().unwrap_or_default())
    }

    /// The least-loaded ready worker with room, with a place reserved on it.
    fn try_reserve(&self) -> Option<(Arc<Member>, Reservation)> {
        let members = self.members.lock();
        let mut best: Option<(usize, &Arc<Member>, Arc<crate::connection::Connection>)> = None;
        // Only spreading matters here; no other memory is published through this counter.
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let n = members.len().max(1);
        for m in members.iter().cycle().skip(start % n).take(members.len()) {
            let st = m.state.lock();
            if st.state != WorkerState::Ready {
                continue;
            }
            let Some(conn) = &st.conn else { continue };
            if conn.broken().is_some() {
                continue;
            }
            let load = conn.in_flight();
            if load < self.config.max_in_flight && best.as_ref().is_none_or(|(l, _, _)| load < *l) {
                best = Some((load, m, conn.clone()));
            }
        }
        let (_, member, conn) = best?;
        let reservation = conn.reserve().ok()?;
        Some((member.clone(), reservation))
    }

    fn refusal(&self, d: &Dispatch) -> Option<PoolError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Some(PoolError::ShuttingDown(self.spec.worker_type.clone()));
        }
        if !d.breaker.allows_calls(Instant::now()) {
            return Some(PoolError::CircuitOpen(self.spec.worker_type.clone()));
        }
        None
    }

    /// Under the dispatch lock: a free worker for a newcomer when nobody queues, else a
    /// place in the queue.
    fn admit(&self, d: &mut Dispatch, priority: Priority) -> Result<Admission, PoolError> {
        if let Some(e) = self.refusal(d) {
            return Err(e);
        }
        if d.queue.is_empty() {
            if let Some(found) = self.try_reserve() {
                return Ok(Admission::Served(found));
            }
        }
        d.queue
            .push(priority)
            .map(Admission::Queued)
            .ok_or_else(|| self.overloaded())
    }

    /// Under the dispatch lock: a free worker for `ticket` if it heads the queue; it then
    /// leaves the queue and the next head is woken (there may be room for it too).
    fn take_as_head(
        &self,
        d: &mut Dispatch,
        ticket: &Arc<Ticket>,
    ) -> Option<(Arc<Member>, Reservation)> {
        if !d.queue.is_head(ticket) {
            return None;
        }
        let found = self.try_reserve()?;
        d.queue.remove(ticket);
        d.queue.wake_head();
        Some(found)
    }

    /// Under the dispatch lock: `ticket` gives up its place.
    fn leave(d: &mut Dispatch, ticket: &Arc<Ticket>) {
        if d.queue.remove(ticket) {
            d.queue.wake_head();
        }
    }

    fn queue_timeout(&self, started: Instant) -> PoolError {
        PoolError::QueueTimeout {
            worker_type: self.spec.worker_type.clone(),
            waited: started.elapsed(),
        }
    }

    fn acquire_sync(
        &self,
        priority: Priority,
        deadline: Instant,
    ) -> Result<(Arc<Member>, Reservation), PoolError> {
        let started = Instant::now();
        let mut d = self.dispatch.lock();
        let ticket = match self.admit(&mut d, priority)? {
            Admission::Served(found) => return Ok(found),
            Admission::Queued(ticket) => ticket,
        };
        self.nudge_supervisor();
        loop {
            if let Some(e) = self.refusal(&d) {
                Self::leave(&mut d, &ticket);
                return Err(e);
            }
            if let Some(found) = self.take_as_head(&mut d, &ticket) {
                return Ok(found);
            }
            if ticket.cv.wait_until(&mut d, deadline).timed_out() {
                if let Some(found) = self.take_as_head(&mut d, &ticket) {
                    return Ok(found);
                }
                Self::leave(&mut d, &ticket);
                return Err(self.queue_timeout(started));
            }
        }
    }

    async fn acquire_async(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Instant,
    ) -> Result<(Arc<Member>, Reservation), PoolError> {
        let started = Instant::now();
        let ticket = match self.admit(&mut self.dispatch.lock(), priority)? {
            Admission::Served(found) => return Ok(found),
            Admission::Queued(ticket) => ticket,
        };
        self.nudge_supervisor();
        let guard = TicketGuard {
            inner: self.clone(),
            ticket,
        };
        let wait = std::future::poll_fn(|cx| {
            let mut d = self.dispatch.lock();
            if let Some(e) = self.refusal(&d) {
                return std::task::Poll::Ready(Err(e));
            }
            if let Some(found) = self.take_as_head(&mut d, &guard.ticket) {
                return std::task::Poll::Ready(Ok(found));
            }
            guard.ticket.set_waker(cx.waker());
            std::task::Poll::Pending
        });
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(result) => result,
            Err(_) => Err(self.queue_timeout(started)),
        }
    }

    fn overloaded(&self) -> PoolError {
        PoolError::Overloaded {
            worker_type: self.spec.worker_type.clone(),
            capacity: self.config.queue_capacity,
        }
    }

    fn after_call(
        &self,
        member: &Member,
        result: Result<Response, CallError>,
        retryable_op: bool,
        attempt: u32,
        deadline: Instant,
        limit: Duration,
    ) -> Outcome {
        // Statistics only: no other memory is published through this counter.
        member.served.fetch_add(1, Ordering::Relaxed);
        let mut d = self.dispatch.lock();
        d.budget.deposit();
        match result {
            Ok(r) => {
                let t = d.breaker.record_success();
                drop(d);
                self.publish_transition(t);
                Outcome::Done(Ok(r))
            }
            Err(e) => {
                let delay = self.config.retry_delay(attempt - 1);
                let can_retry = retryable_op
                    && e.code().is_retryable()
                    && !matches!(e, CallError::Timeout(_))
                    && attempt < self.config.retry_max_attempts
                    && Instant::now() + delay < deadline
                    && d.budget.withdraw();
                if can_retry {
                    tracing::debug!(worker = %member.id, error = %e, attempt, "retrying");
                    Outcome::Retry(delay)
                } else {
                    let e = match e {
                        CallError::Timeout(_) => CallError::Timeout(limit),
                        // The worker stopped the request on its own deadline (the protocol's
                        // `cancelled`; the host sent no cancel) just as the host's ran out:
                        // one deadline, so one answer for the caller, whichever side noticed
                        // first.
                        CallError::Remote(body)
                            if body.code == ErrorCode::Cancelled && Instant::now() >= deadline =>
                        {
                            CallError::Timeout(limit)
                        }
                        e => e,
                    };
                    Outcome::Done(Err(PoolError::Call(e)))
                }
            }
        }
    }
}

/// What a caller gets on arrival.
enum Admission {
    /// A worker with a reserved place.
    Served((Arc<Member>, Reservation)),
    /// A place in the wait queue.
    Queued(Arc<Ticket>),
}

/// Removes an async caller's ticket when its future ends or is dropped.
struct TicketGuard {
    inner: Arc<Inner>,
    ticket: Arc<Ticket>,
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        Inner::leave(&mut self.inner.dispatch.lock(), &self.ticket);
    }
}
