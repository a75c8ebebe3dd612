//! `Idempotency-Key`: the first answer to a POST, kept so a retry gets it again.

use super::{now_ms, StateError, StateStore};
use sqlx::Row;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

/// What a request carrying a key should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use of the key: run the request, then [`StateStore::idempotency_finish`].
    Run,
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request (method, path or body).
    Mismatch,
    /// The first request's answer.
    Done(StoredAnswer),
}

impl StateStore {
    /// Reserves `key` for the request `fingerprint`, or tells what happened to it.
    pub async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, StateError> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency (key, fingerprint, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(fingerprint)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Run);
        }
        let row = sqlx::query(
            "SELECT fingerprint, status, content_type, body FROM idempotency WHERE key = $1",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored: String = row.try_get(0)?;
        if stored != fingerprint {
            return Ok(IdempotencyBegin::Mismatch);
        }
        let status: Option<i64> = row.try_get(1)?;
        Ok(match status {
            None => IdempotencyBegin::InProgress,
            Some(status) => IdempotencyBegin::Done(StoredAnswer {
                status: u16::try_from(status)
                    .map_err(|_| StateError::Corrupt(format!("idempotency key status {status}")))?,
                content_type: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                body: row.try_get::<Option<Vec<u8>>, _>(3)?.unwrap_or_default(),
            }),
        })
    }

    /// Stores the answer to the request that reserved `key`.
    pub async fn idempotency_finish(
        &self,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE idempotency SET status = $2, content_type = $3, body = $4 WHERE key = $1",
        )
        .bind(key)
        .bind(i64::from(answer.status))
        .bind(&answer.content_type)
        .bind(answer.body.as_slice())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees `key` (its request could not be answered, e.g. the server is stopping), so a
    /// retry runs.
    pub async fn idempotency_abort(&self, key: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND status IS NULL")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
