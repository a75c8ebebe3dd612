//! Batches and their items in the store.

use super::{int, now_ms, Backend, OpenCaps, StateError, StateStore};
use sqlx::Row;

/// A batch to create.
#[derive(Debug)]
pub struct NewBatch<'a> {
    /// Its id.
    pub id: &'a str,
    /// Target and priority, JSON.
    pub spec: String,
    /// Items running at once, across hosts.
    pub parallelism: usize,
    /// Each item's input.
    pub items: &'a [serde_json::Value],
    /// The items' JSON size (for the open caps).
    pub bytes: usize,
}

/// A batch as stored.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// Its id.
    pub id: String,
    /// Target and priority, JSON.
    pub spec: String,
    /// `pending`, `running`, `completed`, `cancelled`.
    pub status: String,
    /// Every item, in order.
    pub items: Vec<StoredItem>,
}

/// One item as stored.
#[derive(Debug, Clone)]
pub struct StoredItem {
    /// Its position.
    pub index: usize,
    /// `pending`, `running`, `completed`, `failed`, `cancelled`, `interrupted`.
    pub status: String,
    /// Its output, JSON.
    pub result: Option<String>,
    /// Its error body, JSON.
    pub error: Option<String>,
    /// Its output's attachments.
    pub attachments: Vec<Vec<u8>>,
    /// How many results were stored for it (never more than one).
    pub completions: i64,
    /// The host that stored its end.
    pub finished_by: Option<String>,
}

/// An item this host has just claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its batch.
    pub batch_id: String,
    /// Its batch's target and priority, JSON.
    pub spec: String,
    /// Its position.
    pub index: usize,
    /// Its input, JSON.
    pub input: String,
    /// This claim; results are stored only under it.
    pub epoch: i64,
    /// Whether it was running on a host whose lease ran out (it may have run already).
    pub was_running: bool,
}

fn attachment_owner(batch: &str, index: usize) -> String {
    format!("b/{batch}/{index}")
}

impl StateStore {
    /// Creates a pending batch, unless the open caps refuse it.
    pub async fn create_batch(
        &self,
        batch: NewBatch<'_>,
        caps: OpenCaps,
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx().await?;
        Self::check_open_caps(&mut tx, "batches", ("batch", "batches"), batch.bytes, caps).await?;
        sqlx::query(
            "INSERT INTO batches (id, spec, parallelism, status, bytes, created_ms) \
             VALUES ($1, $2, $3, 'pending', $4, $5)",
        )
        .bind(batch.id)
        .bind(&batch.spec)
        .bind(int(batch.parallelism))
        .bind(int(batch.bytes))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for (i, input) in batch.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO batch_items (batch_id, idx, input, status) \
                 VALUES ($1, $2, $3, 'pending')",
            )
            .bind(batch.id)
            .bind(int(i))
            .bind(serde_json::to_string(input)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every batch id, oldest first.
    pub async fn batch_ids(&self) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query("SELECT id FROM batches ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StateError::from))
            .collect()
    }

    /// Batch `id` with its items, when it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<StoredBatch>, StateError> {
        let Some(row) = sqlx::query("SELECT spec, status FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT idx, status, result, error, completions, finished_by FROM batch_items \
             WHERE batch_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let index = usize::try_from(r.try_get::<i64, _>(0)?).unwrap_or(usize::MAX);
            let status: String = r.try_get(1)?;
            let attachments = if status == "completed" {
                self.attachments(&attachment_owner(id, index)).await?
            } else {
                Vec::new()
            };
            items.push(StoredItem {
                index,
                status,
                result: r.try_get(2)?,
                error: r.try_get(3)?,
                attachments,
                completions: r.try_get(4)?,
                finished_by: r.try_get(5)?,
            });
        }
        Ok(Some(StoredBatch {
            id: id.to_owned(),
            spec: row.try_get(0)?,
            status: row.try_get(1)?,
            items,
        }))
    }

    /// Starts a pending batch: `Ok(false)` when it is not pending (or does not exist).
    pub async fn execute_batch(&self, id: &str) -> Result<bool, StateError> {
        let started = sqlx::query(
            "UPDATE batches SET status = 'running' WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if started > 0 {
            self.maybe_end_batch(id).await?;
        }
        Ok(started > 0)
    }

    /// Cancels the given items (all when `None`): pending ones end `cancelled`, running
    /// ones are marked for their host to cancel. A pending batch cancelled whole ends
    /// `cancelled`. `Ok(false)` when the batch does not exist.
    pub async fn cancel_batch(
        &self,
        id: &str,
        indices: Option<&[usize]>,
    ) -> Result<bool, StateError> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT status FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = exists else {
            return Ok(false);
        };
        let batch_status: String = row.try_get(0)?;
        let cancelled = serde_json::to_string(&ferry::protocol::ErrorBody::new(
            ferry::protocol::ErrorCode::Cancelled,
            "item cancelled",
        ))?;
        let chosen: Option<Vec<i64>> = indices.map(|v| v.iter().map(|&i| int(i)).collect());
        let matches = |i: i64| chosen.as_ref().is_none_or(|c| c.contains(&i));
        let rows = sqlx::query("SELECT idx, status FROM batch_items WHERE batch_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let idx: i64 = r.try_get(0)?;
            let status: String = r.try_get(1)?;
            if !matches(idx) {
                continue;
            }
            let query = match status.as_str() {
                "pending" => sqlx::query(
                    "UPDATE batch_items SET status = 'cancelled', error = $3 \
                     WHERE batch_id = $1 AND idx = $2 AND status = 'pending'",
                )
                .bind(id)
                .bind(idx)
                .bind(&cancelled),
                "running" => sqlx::query(
                    "UPDATE batch_items SET cancel_requested = 1 \
                     WHERE batch_id = $1 AND idx = $2 AND status = 'running'",
                )
                .bind(id)
                .bind(idx),
                _ => continue,
            };
            query.execute(&mut *tx).await?;
        }
        if indices.is_none() && batch_status == "pending" {
            sqlx::query("UPDATE batches SET status = 'cancelled', finished_ms = $2 WHERE id = $1")
                .bind(id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.maybe_end_batch(id).await?;
        Ok(true)
    }

    /// Deletes a batch; `Ok(false)` when it did not exist.
    pub async fn delete_batch(&self, id: &str) -> Result<bool, StateError> {
        self.delete_job("batches", "b/", id).await
    }

    /// Claims up to each running batch's free parallelism of its pending items, and the
    /// running items whose lease ran out, as far as `room` allows: it is asked, per batch
    /// (by its spec), how many of `wanted` items this host can start now, and answers at
    /// most that (so a host takes what its workers can run, and leaves the rest of a
    /// batch to the other hosts).
    pub async fn claim_items(
        &self,
        mut room: impl FnMut(&str, usize) -> usize + Send,
    ) -> Result<Vec<Claimed>, StateError> {
        let now = now_ms();
        let until = now.saturating_add(self.lease_ms);
        // On PostgreSQL the batch row's lock makes one host at a time count and claim a
        // batch's items, so hosts together keep to its parallelism. It waits for the lock
        // rather than skipping the batch: the holder may be an item's end updating the
        // batch, and a skipped round would leave the freed place empty until the next
        // tick. Items are then taken with SKIP LOCKED. Every claim locks batches in the
        // same order, and nothing holding an item's lock waits for a claim, so this cannot
        // deadlock. SQLite has one writer.
        let (batch_lock, item_lock) = if self.backend == Backend::Postgres {
            (" FOR UPDATE", " FOR UPDATE SKIP LOCKED")
        } else {
            ("", "")
        };
        let mut tx = self.write_tx().await?;
        let batches = sqlx::query(&format!(
            "SELECT id, spec, parallelism FROM batches WHERE status = 'running' \
             ORDER BY created_ms, id{batch_lock}"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::new();
        for b in &batches {
            let batch_id: String = b.try_get(0)?;
            let spec: String = b.try_get(1)?;
            let parallelism: i64 = b.try_get(2)?;
            let live: i64 = sqlx::query(
                "SELECT COUNT(*) FROM batch_items WHERE batch_id = $1 AND status = 'running' \
                 AND lease_until >= $2",
            )
            .bind(&batch_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let free = usize::try_from(parallelism - live).unwrap_or(0);
            let free = int(room(&spec, free).min(free));
            if free <= 0 {
                continue;
            }
            let rows = sqlx::query(&format!(
                "SELECT idx, input, status, epoch FROM batch_items WHERE batch_id = $1 \
                 AND (status = 'pending' OR (status = 'running' AND lease_until < $2)) \
                 ORDER BY idx LIMIT $3{item_lock}"
            ))
            .bind(&batch_id)
            .bind(now)
            .bind(free)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                let idx: i64 = r.try_get(0)?;
                let status: String = r.try_get(2)?;
                let epoch: i64 = r.try_get::<i64, _>(3)? + 1;
                sqlx::query(
                    "UPDATE batch_items SET status = 'running', owner = $3, lease_until = $4, \
                     epoch = $5 WHERE batch_id = $1 AND idx = $2",
                )
                .bind(&batch_id)
                .bind(idx)
                .bind(&self.host)
                .bind(until)
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
                claimed.push(Claimed {
                    batch_id: batch_id.clone(),
                    spec: spec.clone(),
                    index: usize::try_from(idx).unwrap_or(usize::MAX),
                    input: r.try_get(1)?,
                    epoch,
                    was_running: status == "running",
                });
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Stores how a claimed item ended (`completed`, `failed`, `cancelled`,
    /// `interrupted`): `Ok(false)` when the claim is no longer this host's (its lease ran
    /// out and another host took the item), and nothing is stored then.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_item(
        &self,
        batch_id: &str,
        index: usize,
        epoch: i64,
        status: &str,
        result: Option<&str>,
        error: Option<&str>,
        attachments: &[Vec<u8>],
    ) -> Result<bool, StateError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE batch_items SET status = $1, result = $2, error = $3, owner = NULL, \
             lease_until = 0, finished_by = $4, \
             completions = completions + (CASE WHEN $1 = 'completed' THEN 1 ELSE 0 END) \
             WHERE batch_id = $5 AND idx = $6 AND owner = $4 AND epoch = $7 \
             AND status = 'running'",
        )
        .bind(status)
        .bind(result)
        .bind(error)
        .bind(&self.host)
        .bind(batch_id)
        .bind(int(index))
        .bind(epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        if !attachments.is_empty() {
            Self::put_attachments(&mut tx, &attachment_owner(batch_id, index), attachments).await?;
        }
        tx.commit().await?;
        self.maybe_end_batch(batch_id).await?;
        Ok(true)
    }

    /// Items this host runs that a caller (on any host) asked to cancel.
    pub async fn cancel_requests(&self) -> Result<Vec<(String, usize)>, StateError> {
        let rows = sqlx::query(
            "SELECT batch_id, idx FROM batch_items WHERE owner = $1 AND status = 'running' \
             AND cancel_requested = 1",
        )
        .bind(&self.host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let idx: i64 = r.try_get(1)?;
                Ok((r.try_get(0)?, usize::try_from(idx).unwrap_or(usize::MAX)))
            })
            .collect()
    }

    /// Ends a running batch none of whose items is pending or running: `cancelled` when
    /// every item was cancelled, else `completed`.
    async fn maybe_end_batch(&self, id: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE batches SET finished_ms = $2, status = CASE \
               WHEN EXISTS (SELECT 1 FROM batch_items WHERE batch_id = $1) \
                AND NOT EXISTS (SELECT 1 FROM batch_items WHERE batch_id = $1 \
                                AND status <> 'cancelled') THEN 'cancelled' \
               ELSE 'completed' END \
             WHERE id = $1 AND status = 'running' AND NOT EXISTS \
               (SELECT 1 FROM batch_items WHERE batch_id = $1 \
                AND status IN ('pending', 'running'))",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
