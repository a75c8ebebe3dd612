//! One worker slot of a pool: a stable id whose process is replaced on failure.

use super::backoff::Backoff;
use super::status::{rss_mb, WorkerState, WorkerStatus, WorkerTelemetry};
use crate::connection::{Connection, Pending};
use crate::worker::WorkerProcess;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A health check in progress.
pub(crate) struct HealthCheck {
    pub(crate) pending: Pending,
    pub(crate) started: Instant,
}

/// Mutable state of a slot. Lock order: the pool's dispatch lock, then this, then a
/// connection's; never call into a connection's failure paths (which run the pool's
/// freed hook) while holding this.
pub(crate) struct MemberState {
    pub(crate) state: WorkerState,
    pub(crate) process: Option<WorkerProcess>,
    pub(crate) conn: Option<Arc<Connection>>,
    pub(crate) pid: Option<u32>,
    pub(crate) ready_since: Option<Instant>,
    pub(crate) restart_at: Option<Instant>,
    pub(crate) backoff: Backoff,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) health: Option<HealthCheck>,
    pub(crate) next_health: Instant,
    pub(crate) busy_at: Instant,
    /// What the current process last reported in a `status_change` event (cleared when
    /// the process is replaced).
    pub(crate) telemetry: Option<WorkerTelemetry>,
}

/// One slot.
pub(crate) struct Member {
    pub(crate) id: String,
    /// The device of every process of this slot (see `PoolConfig::devices`).
    pub(crate) device: Option<String>,
    pub(crate) state: Mutex<MemberState>,
    /// Requests answered, all processes of this slot (statistics only).
    pub(crate) served: AtomicU64,
    /// The number of the slot's current process (1 for the first spawn, then one more per
    /// spawn), so a late exit notice of a replaced process cannot be taken for the new one.
    pub(crate) generation: AtomicU64,
    /// The generation whose stderr closed (0: none), set by that process's exit hook; the
    /// supervisor (woken at the same time) replaces the worker when it is the current one.
    /// A restart kills the old process and spawns the new one at once, so the old one's
    /// end-of-file may arrive after the new one is ready: without the generation it would
    /// have the healthy new worker replaced.
    pub(crate) exited: AtomicU64,
}

impl Member {
    pub(crate) fn new(id: String, device: Option<String>, backoff: Backoff) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Member {
            id,
            device,
            state: Mutex::new(MemberState {
                state: WorkerState::Starting,
                process: None,
                conn: None,
                pid: None,
                ready_since: None,
                restart_at: None,
                backoff,
                restarts: 0,
                last_error: None,
                health: None,
                next_health: now,
                busy_at: now,
                telemetry: None,
            }),
            served: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            exited: AtomicU64::new(0),
        })
    }

    pub(crate) fn status(&self, worker_type: &str) -> WorkerStatus {
        let mut status = {
            let st = self.state.lock();
            WorkerStatus {
                id: self.id.clone(),
                worker_type: worker_type.to_owned(),
                state: st.state,
                pid: st.pid,
                in_flight: st.conn.as_ref().map_or(0, |c| c.in_flight()),
                // Statistics only: no other memory is published through this counter.
                requests_served: self.served.load(Ordering::Relaxed),
                restarts: st.restarts,
                last_error: st.last_error.clone(),
                uptime_s: st.ready_since.map(|t| t.elapsed().as_secs_f64()),
                device: self.device.clone(),
                memory_rss_mb: None,
                telemetry: st.telemetry.clone(),
            }
        };
        // Read outside the lock: a file read.
        status.memory_rss_mb = status.pid.and_then(rss_mb);
        status
    }
}
