//! The one-time import of the conductor's earlier state file, `<state_path>/templates.json`,
//! done by `autoscaler-manage db sync`.
//!
//! Once: the import is recorded in the `imports` table in the same transaction as the
//! templates it adds, so it happens entirely or not at all, and never twice. A template
//! whose name is already in the database is left as the database has it (the database is
//! the newer truth). The file itself is left in place, untouched.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{from_ms, is_duplicate, query_error, Result, Store, StoreError};
use crate::conductor::state::TemplateStore;

/// The name the import is recorded under.
pub const TEMPLATES_JSON: &str = "templates.json";

/// What [`Store::import_state`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    /// There is no `templates.json` (and none was imported before): nothing to do.
    NoFile,
    /// Imported now: templates added, and those skipped because the database had them.
    Imported { added: usize, skipped: usize },
    /// An earlier `db sync` imported it at `at`.
    AlreadyDone { at: DateTime<Utc>, items: u64 },
}

impl Store {
    /// Imports `<state_path>/templates.json` unless it was imported before.
    pub async fn import_state(&self, state_path: &Path) -> Result<ImportOutcome> {
        let doing = "importing templates.json";
        let path = state_path.join(TEMPLATES_JSON);
        // Read (and validate) the whole file before anything is written.
        let file = match path.try_exists() {
            Ok(true) => Some(
                TemplateStore::open(state_path).map_err(|e| StoreError::Import {
                    path: path.clone(),
                    detail: e.to_string(),
                })?,
            ),
            Ok(false) => None,
            Err(e) => {
                return Err(StoreError::Import {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("beginning a transaction"))?;
        // A write first (SQLite: no read-to-write lock upgrade), and the guard against a
        // second import, concurrent ones included.
        let claim = sqlx::query(&format!(
            "INSERT INTO imports (name, imported_at, items) VALUES (?, {}, 0)",
            self.now_ms()
        ))
        .bind(TEMPLATES_JSON)
        .execute(&mut *tx)
        .await;
        match claim {
            Ok(_) => {}
            Err(e) if is_duplicate(&e) => {
                drop(tx);
                return self.earlier_import().await;
            }
            Err(e) => return Err(query_error(doing)(e)),
        }
        let Some(file) = file else {
            // Not recorded (the transaction rolls back): a file that appears later, written
            // by a conductor older than the database, is still imported by the next sync.
            return Ok(ImportOutcome::NoFile);
        };
        let (mut added, mut skipped) = (0, 0);
        for record in file.all() {
            let name = record.template.name();
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM templates WHERE name = ?")
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error(doing))?;
            if exists > 0 {
                skipped += 1;
                continue;
            }
            super::templates::insert_row(&mut *tx, record).await?;
            added += 1;
        }
        sqlx::query("UPDATE imports SET items = ? WHERE name = ?")
            .bind(added as i64)
            .bind(TEMPLATES_JSON)
            .execute(&mut *tx)
            .await
            .map_err(query_error(doing))?;
        tx.commit().await.map_err(query_error(doing))?;
        Ok(ImportOutcome::Imported { added, skipped })
    }

    async fn earlier_import(&self) -> Result<ImportOutcome> {
        let (at, items): (i64, i64) =
            sqlx::query_as("SELECT imported_at, items FROM imports WHERE name = ?")
                .bind(TEMPLATES_JSON)
                .fetch_one(&self.pool)
                .await
                .map_err(query_error("reading the import record"))?;
        Ok(ImportOutcome::AlreadyDone {
            at: from_ms(at),
            items: items as u64,
        })
    }
}
