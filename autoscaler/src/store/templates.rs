//! The active templates: one row per name, the template as its JSON (the keys of the
//! template file), where it came from, when, and whether destroy was asked.
//!
//! Instantiating and asking to destroy are the operator's intents, written by whichever
//! conductor took the request; removing the row is the owner's last act after the
//! tear-down, fenced by its lease.

use sqlx::{any::AnyRow, Any, Executor, Row};

use super::{from_ms, is_duplicate, query_error, Lease, Result, Store, StoreError};
use crate::{conductor::api::TemplateRecord, template::Template};

/// Column sizes of the MySQL schema (migrations/mysql/0001_initial.sql), checked before a
/// write so that a long value is refused with a clear error on SQLite too.
const SOURCE_MAX: usize = 4096;
const TEMPLATE_MAX: usize = 8000;

const COLUMNS: &str = "name, source, template, instantiated_at, destroying";

impl Store {
    /// Adds a template; [`StoreError::Duplicate`] when one of that name exists.
    pub async fn insert_template(&self, record: &TemplateRecord) -> Result<()> {
        insert_row(&self.pool, record).await
    }

    /// The template called `name`.
    pub async fn template(&self, name: &str) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM templates WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a template"))?;
        row.as_ref().map(record).transpose()
    }

    /// Every template, by name.
    pub async fn templates(&self) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM templates ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("listing the templates"))?;
        rows.iter().map(record).collect()
    }

    /// Every template's name and whether it is being destroyed, by name: what a
    /// conductor reads at every pass of its loop (small rows; the templates themselves
    /// only when it takes a group).
    pub async fn template_names(&self) -> Result<Vec<(String, bool)>> {
        let doing = "listing the template names";
        let rows = sqlx::query("SELECT name, destroying FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(doing))?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0).map_err(query_error(doing))?;
                let destroying: i16 = row.try_get(1).map_err(query_error(doing))?;
                Ok((name, destroying != 0))
            })
            .collect()
    }

    /// Marks `name` as being destroyed; `false` when there is no such template.
    pub async fn set_destroying(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE templates SET destroying = 1 WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(query_error("marking a template for destruction"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the template of `lease`'s group with everything kept for the group (its
    /// pending removals, its pool generation), once its owner has torn it down. The lease
    /// row stays, so that the generation never starts over. `None` when there was no such
    /// template.
    pub async fn remove_template(&self, lease: &Lease) -> Result<Option<TemplateRecord>> {
        let doing = "removing a template";
        let mut tx = self.begin_fenced(lease).await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM templates WHERE name = ?"))
            .bind(&lease.group)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error(doing))?;
        let Some(row) = row else {
            return Ok(None); // the transaction rolls back on drop: nothing was written
        };
        let removed = record(&row)?;
        for sql in [
            "DELETE FROM templates WHERE name = ?",
            "DELETE FROM pending_removals WHERE group_name = ?",
            "DELETE FROM group_state WHERE group_name = ?",
        ] {
            sqlx::query(sql)
                .bind(&lease.group)
                .execute(&mut *tx)
                .await
                .map_err(query_error(doing))?;
        }
        tx.commit().await.map_err(query_error(doing))?;
        Ok(Some(removed))
    }
}

/// Inserts `record` through `executor` (the pool, or a transaction's connection).
pub(crate) async fn insert_row<'e, E>(executor: E, record: &TemplateRecord) -> Result<()>
where
    E: Executor<'e, Database = Any>,
{
    let name = record.template.name();
    let json = serde_json::to_string(&record.template).expect("a template serializes");
    check_len("the template's source", &record.source, SOURCE_MAX)?;
    check_len("the template", &json, TEMPLATE_MAX)?;
    let done = sqlx::query(&format!(
        "INSERT INTO templates ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"
    ))
    .bind(name)
    .bind(&record.source)
    .bind(&json)
    .bind(record.instantiated_at.timestamp_millis())
    .bind(i16::from(record.destroying))
    .execute(executor)
    .await;
    match done {
        Ok(_) => Ok(()),
        Err(e) if is_duplicate(&e) => Err(StoreError::Duplicate(name.to_owned())),
        Err(e) => Err(query_error("adding a template")(e)),
    }
}

fn check_len(what: &'static str, text: &str, max: usize) -> Result<()> {
    // MySQL counts characters, not bytes; bytes are never fewer, so this is on the safe side.
    if text.len() > max {
        return Err(StoreError::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn record(row: &AnyRow) -> Result<TemplateRecord> {
    let doing = "reading a template";
    let name: String = row.try_get(0).map_err(query_error(doing))?;
    let json: String = row.try_get(2).map_err(query_error(doing))?;
    let template: Template = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
        what: "template",
        name: name.clone(),
        detail: e.to_string(),
    })?;
    Ok(TemplateRecord {
        template,
        source: row.try_get(1).map_err(query_error(doing))?,
        instantiated_at: from_ms(row.try_get(3).map_err(query_error(doing))?),
        destroying: row.try_get::<i16, _>(4).map_err(query_error(doing))? != 0,
    })
}
