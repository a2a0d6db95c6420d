//! Service records: one row per conductor (`[DEFAULT] host`), with when it was first and
//! last seen by the database's clock. A conductor is up while its last report is younger
//! than `service_down_time` (Nova's rule for its services).

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_ms, is_duplicate, ms, query_error, Result, Store};

/// A conductor as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRecord {
    pub host: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Time since its last report, by the database's clock.
    pub age: Duration,
    /// Reported within `service_down_time`.
    pub up: bool,
}

/// A conductor and the groups it holds leases on (`conductor list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConductorRecord {
    #[serde(flatten)]
    pub service: ServiceRecord,
    /// Groups whose unexpired lease it holds, by name.
    pub groups: Vec<String>,
}

impl Store {
    /// Records that `host` is alive now (inserting its row the first time).
    pub async fn report_service(&self, host: &str) -> Result<()> {
        let doing = "recording a service report";
        let now = self.now_ms();
        let update = format!("UPDATE services SET last_seen = {now} WHERE host = ?");
        for _ in 0..2 {
            let done = sqlx::query(&update)
                .bind(host)
                .execute(&self.pool)
                .await
                .map_err(query_error(doing))?;
            if done.rows_affected() > 0 {
                return Ok(());
            }
            let insert = format!(
                "INSERT INTO services (host, created_at, last_seen) VALUES (?, {now}, {now})"
            );
            match sqlx::query(&insert).bind(host).execute(&self.pool).await {
                Ok(_) => return Ok(()),
                // Inserted by a concurrent report of the same host: update it instead.
                Err(e) if is_duplicate(&e) => continue,
                Err(e) => return Err(query_error(doing)(e)),
            }
        }
        Ok(())
    }

    /// Every service, by host, up or down by `service_down_time`.
    pub async fn services(&self, service_down_time: Duration) -> Result<Vec<ServiceRecord>> {
        let doing = "listing the services";
        let sql = format!(
            "SELECT host, created_at, last_seen, {} - last_seen FROM services ORDER BY host",
            self.now_ms()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(doing))?;
        rows.iter()
            .map(|row| {
                let age_ms: i64 = row.try_get(3).map_err(query_error(doing))?;
                Ok(ServiceRecord {
                    host: row.try_get(0).map_err(query_error(doing))?,
                    created_at: from_ms(row.try_get(1).map_err(query_error(doing))?),
                    last_seen: from_ms(row.try_get(2).map_err(query_error(doing))?),
                    age: Duration::from_millis(age_ms.max(0) as u64),
                    up: age_ms <= ms(service_down_time),
                })
            })
            .collect()
    }

    /// Every conductor with the groups it holds (`conductor list`).
    pub async fn conductors(&self, service_down_time: Duration) -> Result<Vec<ConductorRecord>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for lease in self.leases().await? {
            if let (Some(owner), false) = (lease.owner, lease.expires_in.is_zero()) {
                groups.entry(owner).or_default().push(lease.group);
            }
        }
        Ok(self
            .services(service_down_time)
            .await?
            .into_iter()
            .map(|service| ConductorRecord {
                groups: groups.remove(&service.host).unwrap_or_default(),
                service,
            })
            .collect())
    }

    /// Forgets `host` (a conductor taken out of service for good); `false` when unknown.
    pub async fn delete_service(&self, host: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM services WHERE host = ?")
            .bind(host)
            .execute(&self.pool)
            .await
            .map_err(query_error("deleting a service"))?;
        Ok(done.rows_affected() > 0)
    }
}
