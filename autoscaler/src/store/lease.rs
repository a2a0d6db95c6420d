//! Group leases: which conductor owns a group, until when, and the fencing generation.
//!
//! One row per group name in `group_leases` (owner, expiry, generation), never deleted so
//! the generation never restarts. The rules, all compare-and-set in one SQL statement:
//!
//! - [`Store::acquire`] takes the group when nobody holds it, its lease has expired, or
//!   the caller's host already holds it (a restarted conductor need not wait out its own
//!   lease); every acquisition adds one to the generation, so the previous tenure (of
//!   another conductor, or an earlier process of this one) is fenced off.
//! - [`Store::renew`] extends the caller's lease if its generation is still the current
//!   one, even past its expiry when nobody took the group meanwhile (no other write can
//!   have happened then). [`Store::renew_owned`] does so for every group of a host in one
//!   statement: one write per conductor per tick, not one per group.
//! - [`Store::release`] gives a group up at once (for a clean shutdown or a handover).
//! - Every write of the owner runs in a transaction whose first statement is
//!   `UPDATE group_leases ... WHERE group_name = ? AND owner = ? AND generation = ?`
//!   ([`fence`]); no row means the lease was taken over, and the transaction is rolled
//!   back with [`StoreError::Fenced`]. The row stays locked until the commit (InnoDB's
//!   row lock; SQLite's single writer), so a takeover waits for a write in flight and the
//!   write never lands after it.
//!
//! Expiry is judged by the database's clock only (see the module doc of `store`).
//!
//! Statements (round trips) per call: `acquire` 1 when the row exists (MySQL reads the new
//! generation from the `LAST_INSERT_ID(expr)` the UPDATE sets, SQLite from `RETURNING`),
//! 2 the first time ever (UPDATE, INSERT), 3 when held by another (UPDATE, INSERT refused,
//! SELECT for the message); `renew` 1; `renew_owned` 2 (UPDATE, SELECT); `release` 1; a
//! fenced write 2 + its own statements (BEGIN, fence, ..., COMMIT).

use std::time::Duration;

use sqlx::{any::AnyRow, Any, Row, Transaction};

use super::{is_duplicate, ms, query_error, Dialect, Result, Store, StoreError};

/// A group held by a conductor: the proof its writes carry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub group: String,
    /// The holder's `[DEFAULT] host`.
    pub owner: String,
    /// Grows at every acquisition of the group; a write with an older one is refused.
    pub generation: u64,
}

/// A lease row as stored, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRecord {
    pub group: String,
    /// `None` once released.
    pub owner: Option<String>,
    pub generation: u64,
    /// Time left as of the database's clock; zero when expired or released.
    pub expires_in: Duration,
}

impl Store {
    /// Takes `group` for `host` for `ttl` if nobody else holds it (see the module doc).
    pub async fn acquire(&self, group: &str, host: &str, ttl: Duration) -> Result<Lease> {
        let now = self.now_ms();
        let lease = |generation: i64| Lease {
            group: group.to_owned(),
            owner: host.to_owned(),
            generation: generation as u64,
        };
        let doing = "acquiring a group lease";
        let generation = match self.dialect {
            Dialect::Sqlite => {
                let sql = format!(
                    "UPDATE group_leases SET owner = ?, expires_at = {now} + ?, \
                     generation = generation + 1 \
                     WHERE group_name = ? AND (owner IS NULL OR owner = ? OR expires_at <= {now}) \
                     RETURNING generation"
                );
                sqlx::query_scalar::<_, i64>(&sql)
                    .bind(host)
                    .bind(ms(ttl))
                    .bind(group)
                    .bind(host)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_error(doing))?
            }
            Dialect::MySql => {
                // LAST_INSERT_ID(expr) sets the value the OK packet carries back, so the
                // new generation comes with the UPDATE itself (MySQL's documented way to
                // read a counter it just incremented, without a second statement).
                let sql = format!(
                    "UPDATE group_leases SET owner = ?, expires_at = {now} + ?, \
                     generation = LAST_INSERT_ID(generation + 1) \
                     WHERE group_name = ? AND (owner IS NULL OR owner = ? OR expires_at <= {now})"
                );
                let done = sqlx::query(&sql)
                    .bind(host)
                    .bind(ms(ttl))
                    .bind(group)
                    .bind(host)
                    .execute(&self.pool)
                    .await
                    .map_err(query_error(doing))?;
                (done.rows_affected() == 1).then(|| done.last_insert_id().unwrap_or(0))
            }
        };
        if let Some(generation) = generation {
            return Ok(lease(generation));
        }
        // No row was taken: there is none yet, or another conductor holds it.
        let sql = format!(
            "INSERT INTO group_leases (group_name, owner, expires_at, generation) \
             VALUES (?, ?, {now} + ?, 1)"
        );
        match sqlx::query(&sql)
            .bind(group)
            .bind(host)
            .bind(ms(ttl))
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(lease(1)),
            Err(e) if is_duplicate(&e) => Err(self.held(group).await?),
            Err(e) => Err(query_error(doing)(e)),
        }
    }

    /// The error for a group another conductor holds, as the database sees it now.
    async fn held(&self, group: &str) -> Result<StoreError> {
        let record = self.lease(group).await?;
        Ok(StoreError::Held {
            group: group.to_owned(),
            owner: record
                .as_ref()
                .and_then(|r| r.owner.clone())
                .unwrap_or_else(|| "nobody".to_owned()),
            expires_in: record.map_or(Duration::ZERO, |r| r.expires_in),
        })
    }

    /// Extends `lease` by `ttl` from now, or [`StoreError::Fenced`] when it was taken over.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let sql = format!(
            "UPDATE group_leases SET expires_at = {} + ? \
             WHERE group_name = ? AND owner = ? AND generation = ?",
            self.now_ms()
        );
        let done = sqlx::query(&sql)
            .bind(ms(ttl))
            .bind(&lease.group)
            .bind(&lease.owner)
            .bind(lease.generation as i64)
            .execute(&self.pool)
            .await
            .map_err(query_error("renewing a group lease"))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(fenced(lease))
        }
    }

    /// Extends every lease `host` holds by `ttl` in one statement and returns them: the
    /// caller compares with the leases it thinks it has, and stops working on any group
    /// missing from the answer (taken over).
    pub async fn renew_owned(&self, host: &str, ttl: Duration) -> Result<Vec<Lease>> {
        let sql = format!(
            "UPDATE group_leases SET expires_at = {} + ? WHERE owner = ?",
            self.now_ms()
        );
        let doing = "renewing the group leases";
        sqlx::query(&sql)
            .bind(ms(ttl))
            .bind(host)
            .execute(&self.pool)
            .await
            .map_err(query_error(doing))?;
        let rows = sqlx::query(
            "SELECT group_name, generation FROM group_leases WHERE owner = ? ORDER BY group_name",
        )
        .bind(host)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(doing))?;
        rows.iter()
            .map(|row| {
                Ok(Lease {
                    group: row.try_get(0).map_err(query_error(doing))?,
                    owner: host.to_owned(),
                    generation: row.try_get::<i64, _>(1).map_err(query_error(doing))? as u64,
                })
            })
            .collect()
    }

    /// Gives `lease` up now; [`StoreError::Fenced`] when it was no longer held.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let done = sqlx::query(
            "UPDATE group_leases SET owner = NULL, expires_at = 0 \
             WHERE group_name = ? AND owner = ? AND generation = ?",
        )
        .bind(&lease.group)
        .bind(&lease.owner)
        .bind(lease.generation as i64)
        .execute(&self.pool)
        .await
        .map_err(query_error("releasing a group lease"))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(fenced(lease))
        }
    }

    /// The lease row of `group`, if it was ever acquired.
    pub async fn lease(&self, group: &str) -> Result<Option<LeaseRecord>> {
        let sql = format!(
            "SELECT group_name, owner, generation, expires_at - {} FROM group_leases \
             WHERE group_name = ?",
            self.now_ms()
        );
        let row = sqlx::query(&sql)
            .bind(group)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a group lease"))?;
        row.as_ref().map(lease_record).transpose()
    }

    /// Every lease row, by group name.
    pub async fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let sql = format!(
            "SELECT group_name, owner, generation, expires_at - {} FROM group_leases \
             ORDER BY group_name",
            self.now_ms()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("listing the group leases"))?;
        rows.iter().map(lease_record).collect()
    }

    /// Begins a write of `lease`'s holder: the transaction, fenced ([`fence`]).
    pub(crate) async fn begin_fenced(&self, lease: &Lease) -> Result<Transaction<'static, Any>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("beginning a transaction"))?;
        fence(&mut tx, lease).await?;
        Ok(tx)
    }
}

/// The first statement of every owner's write: it locks the lease row and matches only
/// while `lease` is the current tenure. A no-op update still counts as a matched row on
/// both databases (sqlx connects to MySQL with CLIENT_FOUND_ROWS; SQLite counts matches),
/// and being a write it takes SQLite's write lock first, so the transaction never has to
/// upgrade a read lock (which can fail at once with SQLITE_BUSY).
pub(crate) async fn fence(tx: &mut Transaction<'static, Any>, lease: &Lease) -> Result<()> {
    let done = sqlx::query(
        "UPDATE group_leases SET generation = generation \
         WHERE group_name = ? AND owner = ? AND generation = ?",
    )
    .bind(&lease.group)
    .bind(&lease.owner)
    .bind(lease.generation as i64)
    .execute(&mut **tx)
    .await
    .map_err(query_error("checking the group lease"))?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(fenced(lease))
    }
}

fn fenced(lease: &Lease) -> StoreError {
    StoreError::Fenced {
        group: lease.group.clone(),
        owner: lease.owner.clone(),
        generation: lease.generation,
    }
}

fn lease_record(row: &AnyRow) -> Result<LeaseRecord> {
    let doing = "reading a group lease";
    let left: i64 = row.try_get(3).map_err(query_error(doing))?;
    let owner: Option<String> = row.try_get(1).map_err(query_error(doing))?;
    Ok(LeaseRecord {
        group: row.try_get(0).map_err(query_error(doing))?,
        expires_in: if owner.is_some() {
            Duration::from_millis(left.max(0) as u64)
        } else {
            Duration::ZERO
        },
        owner,
        generation: row.try_get::<i64, _>(2).map_err(query_error(doing))? as u64,
    })
}
