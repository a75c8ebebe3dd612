//! Workflows made through the API, shared by every host.

use super::{int, StateError, StateStore};
use sqlx::Row;

impl StateStore {
    /// Every API-made workflow: `(id, JSON)`.
    pub async fn workflows(&self) -> Result<Vec<(String, String)>, StateError> {
        let rows = sqlx::query("SELECT id, body FROM workflows ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Adds or replaces a workflow, unless the others plus this one would go past
    /// `max_count` workflows or `max_bytes` bytes.
    pub async fn put_workflow(
        &self,
        id: &str,
        body: &str,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM workflows \
             WHERE id <> $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let count = usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(usize::MAX);
        let total = usize::try_from(row.try_get::<i64, _>(1)?).unwrap_or(usize::MAX);
        if count >= max_count {
            return Err(StateError::LimitReached(format!(
                "{count} workflows made through the API already (limits.api_workflows)"
            )));
        }
        if total.saturating_add(body.len()) > max_bytes {
            return Err(StateError::LimitReached(format!(
                "this workflow ({} bytes) would take API-made workflows past {max_bytes} bytes \
                 (limits.api_workflow_bytes)",
                body.len()
            )));
        }
        sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO workflows (id, body, bytes) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(body)
            .bind(int(body.len()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a workflow; `Ok(false)` when there was none.
    pub async fn delete_workflow(&self, id: &str) -> Result<bool, StateError> {
        let n = sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
