//! The job state store: sessions, batches, API-made workflows, results and idempotency
//! keys in a database, so they outlive the process and several hosts can share them.
//!
//! One type, [`StateStore`], over sqlx's `Any` driver with two backends: SQLite (the
//! embedded default; `memory` is an in-memory SQLite database that dies with the
//! process) and PostgreSQL (several hosts, one database). The SQL is shared; where the
//! backends differ (row locks for claiming work) the statement says so.
//!
//! Work is claimed with **leases**: the host running a batch item or a session writes its
//! id and an expiry, renews the expiry every third of `lease_ms`, and stores a result
//! only while its claim (`epoch`) is still the current one. A host that dies stops
//! renewing; once its leases run out another host (or the same one, restarted) takes the
//! work over. On PostgreSQL claims take row locks with `FOR UPDATE SKIP LOCKED`, so two
//! hosts never claim the same item; SQLite has one writer connection.

mod batches;
mod error;
mod idempotency;
mod migrate;
mod sessions;
#[cfg(test)]
mod tests;
mod workflows;

pub use batches::{Claimed, NewBatch, StoredBatch, StoredItem};
pub use error::StateError;
pub use idempotency::{IdempotencyBegin, StoredAnswer};
pub use sessions::{NewSession, SessionSave, StoredSession};

use crate::config::StateConfig;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An in-memory SQLite database: nothing outlives the process.
    Memory,
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `memory`, `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Caps on unfinished sessions or batches (`[limits]`), checked when one is created.
#[derive(Debug, Clone, Copy)]
pub struct OpenCaps {
    /// At most this many unfinished.
    pub count: usize,
    /// Their inputs at most this many JSON bytes together.
    pub bytes: usize,
}

/// The job state store.
#[derive(Debug, Clone)]
pub struct StateStore {
    pool: AnyPool,
    backend: Backend,
    host: String,
    lease_ms: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A `usize` as a database integer (saturating; sizes here are far below `i64::MAX`).
pub(crate) fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateStore {
    /// Opens (creating it when missing) the database `[state]` names and brings its schema
    /// up to date.
    pub async fn open(config: &StateConfig) -> Result<Self, StateError> {
        Self::open_url(
            &config.effective_url(),
            &config.effective_host_id(),
            config.lease_ms,
        )
        .await
    }

    /// Opens the database at `url` (`memory`, `sqlite://PATH`, `postgres://...`) as host
    /// `host`.
    pub async fn open_url(url: &str, host: &str, lease_ms: u64) -> Result<Self, StateError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let (backend, connect) = if url == "memory" {
            (Backend::Memory, "sqlite::memory:".to_owned())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
                        url: shown.clone(),
                        reason: format!("cannot create {}: {e}", dir.display()),
                    })?;
                }
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StateError::Open {
                url: shown,
                reason: "expected `memory`, `sqlite://PATH` or `postgres://...`".into(),
            });
        };
        let options = match backend {
            // One connection: SQLite has one writer anyway, and an in-memory database
            // lives exactly as long as its connection, which must therefore never close.
            Backend::Memory | Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Backend::Postgres => AnyPoolOptions::new().max_connections(8),
        }
        .acquire_timeout(Duration::from_secs(30));
        let pool = options
            .connect(&connect)
            .await
            .map_err(|e| StateError::Open {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        if backend != Backend::Postgres {
            // Wait for a lock held by another process instead of failing at once.
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&pool)
                .await?;
        }
        migrate::run(&pool, backend).await?;
        let store = StateStore {
            pool,
            backend,
            host: host.to_owned(),
            lease_ms: i64::try_from(lease_ms).unwrap_or(i64::MAX),
        };
        store.release_own_leases().await?;
        Ok(store)
    }

    /// The database.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This host's id in leases.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.lease_ms).unwrap_or(0))
    }

    /// A transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred one that read first could not upgrade while another
    /// connection (another process on the same file) holds a read lock, and would fail with
    /// "database is locked" instead of waiting out `busy_timeout`.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        Ok(match self.backend {
            Backend::Postgres => self.pool.begin().await?,
            Backend::Memory | Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// Whether the database answers (`/health/ready`).
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Work leased by this host id in an earlier life (a crash, a SIGKILL) is nobody's:
    /// its leases end now, so the claim loop takes it over at once instead of after
    /// `lease_ms`.
    async fn release_own_leases(&self) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE batch_items SET lease_until = 0 WHERE owner = $1 AND status = 'running'",
        )
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE sessions SET lease_until = 0 WHERE owner = $1 \
             AND status IN ('pending', 'running', 'paused')",
        )
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Renews the leases of everything this host runs. Work left by this host id's
    /// earlier life has lease 0 (`release_own_leases`) and is not renewed: it waits to be
    /// claimed again.
    pub async fn renew_leases(&self) -> Result<(), StateError> {
        let until = now_ms().saturating_add(self.lease_ms);
        sqlx::query(
            "UPDATE batch_items SET lease_until = $1 WHERE owner = $2 AND status = 'running' \
             AND lease_until > 0",
        )
        .bind(until)
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE sessions SET lease_until = $1 WHERE owner = $2 \
             AND status IN ('pending', 'running', 'paused') AND lease_until > 0",
        )
        .bind(until)
        .bind(&self.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes sessions and batches finished more than `max_age` ago or beyond the newest
    /// `keep` finished ones, with their attachments, and idempotency keys older than
    /// `key_ttl`.
    pub async fn prune(
        &self,
        keep: usize,
        max_age: Duration,
        key_ttl: Duration,
    ) -> Result<(), StateError> {
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let oldest = now.saturating_sub(ms(max_age));
        for (table, prefix) in [("batches", "b/"), ("sessions", "s/")] {
            let rows = sqlx::query(&format!(
                "SELECT id, finished_ms FROM {table} WHERE finished_ms IS NOT NULL \
                 ORDER BY finished_ms DESC, id DESC"
            ))
            .fetch_all(&self.pool)
            .await?;
            for (i, row) in rows.iter().enumerate() {
                let id: String = row.try_get(0)?;
                let finished: i64 = row.try_get(1)?;
                if i >= keep || finished < oldest {
                    self.delete_job(table, prefix, &id).await?;
                }
            }
        }
        sqlx::query("DELETE FROM idempotency WHERE created_ms < $1")
            .bind(now.saturating_sub(ms(key_ttl)))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one session or batch with its items and attachments.
    async fn delete_job(&self, table: &str, prefix: &str, id: &str) -> Result<bool, StateError> {
        let mut tx = self.write_tx().await?;
        if table == "batches" {
            sqlx::query("DELETE FROM batch_items WHERE batch_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM attachments WHERE owner = $1 OR owner LIKE $2")
            .bind(format!("{prefix}{id}"))
            .bind(format!("{prefix}{}/%", like_escape(id)))
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// Replaces the attachments stored under `owner`.
    async fn put_attachments(
        tx: &mut sqlx::AnyConnection,
        owner: &str,
        attachments: &[Vec<u8>],
    ) -> Result<(), StateError> {
        sqlx::query("DELETE FROM attachments WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        for (i, data) in attachments.iter().enumerate() {
            sqlx::query("INSERT INTO attachments (owner, idx, data) VALUES ($1, $2, $3)")
                .bind(owner)
                .bind(int(i))
                .bind(data.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// The attachments stored under `owner`, in order.
    async fn attachments(&self, owner: &str) -> Result<Vec<Vec<u8>>, StateError> {
        let rows = sqlx::query("SELECT data FROM attachments WHERE owner = $1 ORDER BY idx")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r: &AnyRow| r.try_get::<Vec<u8>, _>(0).map_err(StateError::from))
            .collect()
    }

    /// Counts unfinished rows of `table` and their bytes, refusing one more past `caps`.
    async fn check_open_caps(
        tx: &mut sqlx::AnyConnection,
        table: &str,
        (what, plural): (&str, &str),
        bytes: usize,
        caps: OpenCaps,
    ) -> Result<(), StateError> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM {table} WHERE finished_ms IS NULL"
        ))
        .fetch_one(&mut *tx)
        .await?;
        let open = usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(usize::MAX);
        let open_bytes = usize::try_from(row.try_get::<i64, _>(1)?).unwrap_or(usize::MAX);
        if open >= caps.count {
            return Err(StateError::LimitReached(format!(
                "{open} unfinished {plural} already (limits.open_{plural}); wait for one to \
                 finish or delete one"
            )));
        }
        if open_bytes.saturating_add(bytes) > caps.bytes {
            return Err(StateError::LimitReached(format!(
                "this {what} ({bytes} bytes) would take unfinished {plural} past {} bytes \
                 (limits.open_{what}_bytes)",
                caps.bytes
            )));
        }
        Ok(())
    }
}

/// `s` with `LIKE`'s wildcards made literal... as far as ids go: ids are made by the
/// server from `[a-z0-9-]`, so none are present; the check keeps it so.
fn like_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '%' | '_' | '\\'))
        .collect()
}

/// `url` without a password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &url[scheme + 3..at];
            match auth.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..scheme + 3], &auth[..colon], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
