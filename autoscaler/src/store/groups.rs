//! What a group's owner decided about its VMs and must not forget when another conductor
//! takes the group over: the web VMs the operator asked to remove (and how far their drain
//! went), and the last pool generation sent to the splitter.
//!
//! A removal is asked by the operator, through any conductor ([`Store::request_removal`],
//! unfenced); its progress and its end are the owner's, fenced by the lease. Each call is
//! one change: the caller writes when something changed, never once per tick.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_ms, is_duplicate, query_error, Lease, Result, Store};

/// A web VM to drain, then delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingRemoval {
    pub vm: String,
    /// When the operator asked (the database's clock).
    pub requested_at: DateTime<Utc>,
    /// The pool generation that first carried the VM as draining and when it was sent;
    /// `None` until then.
    pub drain: Option<(u64, DateTime<Utc>)>,
}

impl Store {
    /// Records the operator's wish to remove `vm` from `group`; `false` when it was
    /// already asked.
    pub async fn request_removal(&self, group: &str, vm: &str) -> Result<bool> {
        let sql = format!(
            "INSERT INTO pending_removals (group_name, vm_name, requested_at) VALUES (?, ?, {})",
            self.now_ms()
        );
        match sqlx::query(&sql)
            .bind(group)
            .bind(vm)
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(query_error("recording a VM removal")(e)),
        }
    }

    /// The pending removals of `group`, by VM name.
    pub async fn removals(&self, group: &str) -> Result<Vec<PendingRemoval>> {
        let doing = "listing the VM removals";
        let rows = sqlx::query(
            "SELECT vm_name, requested_at, drain_generation, drain_since FROM pending_removals \
             WHERE group_name = ? ORDER BY vm_name",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(doing))?;
        rows.iter()
            .map(|row| {
                let generation: Option<i64> = row.try_get(2).map_err(query_error(doing))?;
                let since: Option<i64> = row.try_get(3).map_err(query_error(doing))?;
                Ok(PendingRemoval {
                    vm: row.try_get(0).map_err(query_error(doing))?,
                    requested_at: from_ms(row.try_get(1).map_err(query_error(doing))?),
                    drain: generation.zip(since).map(|(g, s)| (g as u64, from_ms(s))),
                })
            })
            .collect()
    }

    /// The owner sent pool `generation` at `since` with `vm` draining; `false` when no
    /// removal of `vm` is pending.
    pub async fn record_drain(
        &self,
        lease: &Lease,
        vm: &str,
        generation: u64,
        since: DateTime<Utc>,
    ) -> Result<bool> {
        let doing = "recording a drain";
        let mut tx = self.begin_fenced(lease).await?;
        let done = sqlx::query(
            "UPDATE pending_removals SET drain_generation = ?, drain_since = ? \
             WHERE group_name = ? AND vm_name = ?",
        )
        .bind(generation as i64)
        .bind(since.timestamp_millis())
        .bind(&lease.group)
        .bind(vm)
        .execute(&mut *tx)
        .await
        .map_err(query_error(doing))?;
        tx.commit().await.map_err(query_error(doing))?;
        Ok(done.rows_affected() > 0)
    }

    /// The owner deleted `vm` (or gave up on it): the removal is done. `false` when none
    /// was pending.
    pub async fn finish_removal(&self, lease: &Lease, vm: &str) -> Result<bool> {
        let doing = "finishing a VM removal";
        let mut tx = self.begin_fenced(lease).await?;
        let done = sqlx::query("DELETE FROM pending_removals WHERE group_name = ? AND vm_name = ?")
            .bind(&lease.group)
            .bind(vm)
            .execute(&mut *tx)
            .await
            .map_err(query_error(doing))?;
        tx.commit().await.map_err(query_error(doing))?;
        Ok(done.rows_affected() > 0)
    }

    /// The owner sent pool `generation` to the splitter. Generations only grow: an older
    /// one than stored is ignored (`false`), in the same statement.
    pub async fn set_pool_generation(&self, lease: &Lease, generation: u64) -> Result<bool> {
        let doing = "recording the pool generation";
        let generation = generation as i64;
        let mut tx = self.begin_fenced(lease).await?;
        let updated = sqlx::query(
            "UPDATE group_state SET pool_generation = ? \
             WHERE group_name = ? AND pool_generation < ?",
        )
        .bind(generation)
        .bind(&lease.group)
        .bind(generation)
        .execute(&mut *tx)
        .await
        .map_err(query_error(doing))?
        .rows_affected()
            > 0;
        let newer = if updated {
            true
        } else {
            // No row yet, or one with a generation at least as new. The lease row is
            // locked by the fence, so no other owner inserts meanwhile.
            let exists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM group_state WHERE group_name = ?")
                    .bind(&lease.group)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(query_error(doing))?;
            if exists == 0 {
                sqlx::query("INSERT INTO group_state (group_name, pool_generation) VALUES (?, ?)")
                    .bind(&lease.group)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error(doing))?;
            }
            exists == 0
        };
        tx.commit().await.map_err(query_error(doing))?;
        Ok(newer)
    }

    /// The last pool generation recorded for `group`.
    pub async fn pool_generation(&self, group: &str) -> Result<Option<u64>> {
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT pool_generation FROM group_state WHERE group_name = ?")
                .bind(group)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error("reading the pool generation"))?;
        Ok(generation.map(|g| g as u64))
    }
}
