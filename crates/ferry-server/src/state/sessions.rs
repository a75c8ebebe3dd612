//! Sessions (workflow runs) in the store.

use super::{int, now_ms, OpenCaps, StateError, StateStore};
use sqlx::Row;

/// A session to create; this host runs it.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Its id.
    pub id: &'a str,
    /// The workflow, JSON.
    pub workflow: String,
    /// Its input, JSON.
    pub input: String,
    /// Its first view, JSON.
    pub view: String,
    /// Its input's size (for the open caps).
    pub bytes: usize,
}

/// A session as stored.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Its id.
    pub id: String,
    /// The workflow, JSON.
    pub workflow: String,
    /// Its input, JSON.
    pub input: String,
    /// Its view, JSON.
    pub view: String,
    /// Finished steps' outputs, JSON (where a resume starts).
    pub progress: String,
    /// `pending`, `running`, `paused`, `completed`, `failed`, `cancelled`, `interrupted`.
    pub status: String,
    /// This host's claim, when it claimed it.
    pub epoch: i64,
    /// The attachments of its result, when it completed.
    pub result_attachments: Vec<Vec<u8>>,
}

/// A session's new state, written by the host that runs it.
#[derive(Debug)]
pub struct SessionSave<'a> {
    /// The claim it runs under.
    pub epoch: i64,
    /// Its view, JSON.
    pub view: String,
    /// Its status.
    pub status: &'a str,
    /// Finished steps' outputs, JSON, when they changed.
    pub progress: Option<String>,
    /// A finished step's attachments (`(step name, attachments)`), kept for a resume.
    pub step_attachments: Option<(&'a str, &'a [Vec<u8>])>,
    /// The result's attachments, when it completed.
    pub result_attachments: Option<&'a [Vec<u8>]>,
}

const OPEN: &str = "('pending', 'running', 'paused')";

impl StateStore {
    /// Creates a session this host runs (claim 1), unless the open caps refuse it.
    pub async fn create_session(
        &self,
        s: NewSession<'_>,
        caps: OpenCaps,
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx().await?;
        Self::check_open_caps(&mut tx, "sessions", ("session", "sessions"), s.bytes, caps).await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sessions (id, workflow, input, view, progress, status, owner, \
             lease_until, epoch, bytes, created_ms) \
             VALUES ($1, $2, $3, $4, '{}', 'pending', $5, $6, 1, $7, $8)",
        )
        .bind(s.id)
        .bind(&s.workflow)
        .bind(&s.input)
        .bind(&s.view)
        .bind(&self.host)
        .bind(now.saturating_add(self.lease_ms))
        .bind(int(s.bytes))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a session's new state: `Ok(false)` when this host no longer holds it.
    pub async fn save_session(&self, id: &str, save: SessionSave<'_>) -> Result<bool, StateError> {
        let finished = !matches!(save.status, "pending" | "running" | "paused");
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE sessions SET view = $1, status = $2, progress = COALESCE($3, progress), \
             finished_ms = $4 WHERE id = $5 AND owner = $6 AND epoch = $7",
        )
        .bind(&save.view)
        .bind(save.status)
        .bind(save.progress.as_deref())
        .bind(finished.then(now_ms))
        .bind(id)
        .bind(&self.host)
        .bind(save.epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        if let Some((step, atts)) = save.step_attachments {
            Self::put_attachments(&mut tx, &format!("s/{id}/{step}"), atts).await?;
        }
        if let Some(atts) = save.result_attachments {
            Self::put_attachments(&mut tx, &format!("s/{id}"), atts).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Reopens finished session `id` for a restart on this host: a new claim, no progress,
    /// status `pending` and `view` (JSON), unless the open caps refuse it. `Ok(None)` when
    /// there is no finished session `id` (it is gone, or open: then its host restarts it).
    pub async fn reopen_session(
        &self,
        id: &str,
        view: &str,
        caps: OpenCaps,
    ) -> Result<Option<StoredSession>, StateError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "SELECT workflow, input, epoch, bytes FROM sessions \
             WHERE id = $1 AND status NOT IN {OPEN}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let bytes: i64 = r.try_get(3)?;
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        Self::check_open_caps(&mut tx, "sessions", ("session", "sessions"), bytes, caps).await?;
        let epoch = r.try_get::<i64, _>(2)?.saturating_add(1);
        sqlx::query(
            "UPDATE sessions SET view = $2, progress = '{}', status = 'pending', \
             finished_ms = NULL, owner = $3, lease_until = $4, epoch = $5, control = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .bind(view)
        .bind(&self.host)
        .bind(now_ms().saturating_add(self.lease_ms))
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
        let reopened = StoredSession {
            id: id.to_owned(),
            workflow: r.try_get(0)?,
            input: r.try_get(1)?,
            view: view.to_owned(),
            progress: "{}".to_owned(),
            status: "pending".to_owned(),
            epoch,
            result_attachments: Vec::new(),
        };
        tx.commit().await?;
        Ok(Some(reopened))
    }

    /// Every session id, oldest first.
    pub async fn session_ids(&self) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query("SELECT id FROM sessions ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StateError::from))
            .collect()
    }

    /// Session `id`, when it exists.
    pub async fn session(&self, id: &str) -> Result<Option<StoredSession>, StateError> {
        let row = sqlx::query(
            "SELECT id, workflow, input, view, progress, status, epoch FROM sessions \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(self.stored_session(&r).await?)),
            None => Ok(None),
        }
    }

    async fn stored_session(&self, r: &sqlx::any::AnyRow) -> Result<StoredSession, StateError> {
        let id: String = r.try_get(0)?;
        let status: String = r.try_get(5)?;
        let result_attachments = if status == "completed" {
            self.attachments(&format!("s/{id}")).await?
        } else {
            Vec::new()
        };
        Ok(StoredSession {
            workflow: r.try_get(1)?,
            input: r.try_get(2)?,
            view: r.try_get(3)?,
            progress: r.try_get(4)?,
            status,
            epoch: r.try_get(6)?,
            result_attachments,
            id,
        })
    }

    /// The attachments a finished step of session `id` made.
    pub async fn step_attachments(&self, id: &str, step: &str) -> Result<Vec<Vec<u8>>, StateError> {
        self.attachments(&format!("s/{id}/{step}")).await
    }

    /// Deletes a session; `Ok(false)` when it did not exist.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StateError> {
        self.delete_job("sessions", "s/", id).await
    }

    /// Claims the unfinished sessions whose lease ran out (their host died), for this host
    /// to resume.
    pub async fn claim_sessions(&self) -> Result<Vec<StoredSession>, StateError> {
        let now = now_ms();
        let lock = if self.backend == super::Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, workflow, input, view, progress, status, epoch FROM sessions \
             WHERE status IN {OPEN} AND lease_until < $1 ORDER BY created_ms{lock}"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::new();
        for r in &rows {
            // Built here, not by `stored_session`: that reads attachments through the pool,
            // whose one SQLite connection this transaction holds (and an open session has
            // no result attachments).
            let mut s = StoredSession {
                id: r.try_get(0)?,
                workflow: r.try_get(1)?,
                input: r.try_get(2)?,
                view: r.try_get(3)?,
                progress: r.try_get(4)?,
                status: r.try_get(5)?,
                epoch: r.try_get(6)?,
                result_attachments: Vec::new(),
            };
            s.epoch += 1;
            sqlx::query(
                "UPDATE sessions SET owner = $2, lease_until = $3, epoch = $4, control = NULL \
                 WHERE id = $1",
            )
            .bind(&s.id)
            .bind(&self.host)
            .bind(now.saturating_add(self.lease_ms))
            .bind(s.epoch)
            .execute(&mut *tx)
            .await?;
            claimed.push(s);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Leaves a control (`pause`, `resume`, `cancel`, `restart`) for the host that runs
    /// session `id`. `Ok(None)` when it does not exist; else its status now.
    pub async fn request_control(
        &self,
        id: &str,
        control: &str,
    ) -> Result<Option<String>, StateError> {
        sqlx::query(&format!(
            "UPDATE sessions SET control = $2 WHERE id = $1 AND status IN {OPEN}"
        ))
        .bind(id)
        .bind(control)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT status FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<String, _>(0).map_err(StateError::from))
            .transpose()
    }

    /// Controls left for sessions this host runs (taken: each is returned once).
    pub async fn take_controls(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT id, control FROM sessions WHERE owner = $1 AND control IS NOT NULL",
        )
        .bind(&self.host)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let id: String = r.try_get(0)?;
            sqlx::query("UPDATE sessions SET control = NULL WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            out.push((id, r.try_get(1)?));
        }
        tx.commit().await?;
        Ok(out)
    }
}
