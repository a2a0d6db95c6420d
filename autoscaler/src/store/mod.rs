//! The database: what the service decided and must outlive a conductor (templates, VM
//! intents, service records, group leases), in SQLite or MySQL/MariaDB, named by
//! `[database] connection` in oslo.db's URL form ([`url`]).
//!
//! One [`Store`] holds a pool of sqlx's `Any` driver, chosen at run time from the URL;
//! queries are plain runtime SQL with `?` placeholders, the same text on both databases
//! except the few spellings [`Dialect`] picks (the clock, `RETURNING`). The schema comes
//! from versioned migrations embedded in the binary (`migrations/<dialect>/`), applied by
//! `autoscaler-manage db sync` ([`Store::sync`]); a service checks the version at start
//! ([`Store::check_schema`]).
//!
//! Time: every expiry and "last seen" is computed by the database from its own clock
//! (`unixepoch('subsec')` / `UNIX_TIMESTAMP(NOW(6))`, in milliseconds), never from the
//! caller's: conductors on different hosts may disagree on the time by seconds, and a
//! lease judged by two clocks could be held twice. Only values the caller decided (when
//! a template was instantiated, when a drain began) are passed in.
//!
//! Writes that belong to a group's owner take its [`Lease`] and are fenced in SQL
//! ([`lease`]): a conductor whose lease was taken over gets [`StoreError::Fenced`] and
//! changes nothing. The operator's intents (a template, destroy, remove a VM) are written
//! by whichever conductor took the request, unfenced: they hold whoever owns the group.
//!
//! Submodules: [`url`] (parsing, pure), [`templates`], [`groups`] (VM intents, the pool
//! generation), [`lease`], [`services`], [`spread`] (which conductor should own which
//! group, pure), [`import`] (the one-time import of `templates.json`).

pub mod groups;
pub mod import;
pub mod lease;
pub mod secrets;
pub mod services;
pub mod spread;
pub mod templates;
pub mod url;

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{Migrate, MigrateError, Migrator},
    AnyPool,
};

pub use groups::PendingRemoval;
pub use import::ImportOutcome;
pub use lease::Lease;
pub use secrets::{conductor_key, AjpSecret};
pub use services::{ConductorRecord, ServiceRecord};
pub use url::{DatabaseUrl, Dialect, UrlError};

/// The schema migrations, one folder per dialect: the same versions, written for each
/// (SQLite's ALTER TABLE cannot do what MySQL's does, and the column types differ; see the
/// head of each file).
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/mysql");

/// The command that brings a database's schema up to date, for messages.
pub const SYNC_COMMAND: &str = "autoscaler-manage db sync";

/// A database operation that failed. Messages never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create the directory of the database {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("the database has no schema yet: run `{SYNC_COMMAND}`")]
    NoSchema,
    #[error("the database schema is at version {current}, this autoscaler needs version {needed}: run `{SYNC_COMMAND}`")]
    SchemaBehind { current: i64, needed: i64 },
    #[error("the database schema is at version {current}, newer than this autoscaler knows (version {known}): upgrade autoscaler on this host")]
    SchemaAhead { current: i64, known: i64 },
    #[error("migration {version} of the database schema is not the one this autoscaler has (it was changed after it was applied)")]
    SchemaMismatch { version: i64 },
    #[error("migration {version} of the database schema failed part-way; repair the database, then run `{SYNC_COMMAND}` again")]
    SchemaDirty { version: i64 },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] MigrateError),
    #[error("template {0:?} already exists")]
    Duplicate(String),
    #[error("{what} is {len} bytes long; the database holds at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the stored {what} of {name:?} cannot be read: {detail}")]
    Corrupt {
        what: &'static str,
        name: String,
        detail: String,
    },
    #[error("group {group:?} is held by {owner} for {} ms more", .expires_in.as_millis())]
    Held {
        group: String,
        owner: String,
        expires_in: Duration,
    },
    #[error("{owner} no longer holds group {group:?} (its lease of generation {generation} was taken over): the write was refused")]
    Fenced {
        group: String,
        owner: String,
        generation: u64,
    },
    #[error("cannot import {path}: {detail}")]
    Import { path: PathBuf, detail: String },
}

/// A result of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Tags a sqlx error with what was being done.
pub(crate) fn query_error(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

/// Pool settings, from `[database]` (oslo.db's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_pool_size: u32,
    /// Longest wait for a free connection.
    pub pool_timeout: Duration,
    /// A connection older than this is closed and replaced (MySQL servers drop idle
    /// connections after `wait_timeout`).
    pub connection_recycle_time: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_pool_size: 5,
            pool_timeout: Duration::from_secs(30),
            connection_recycle_time: Duration::from_secs(3600),
        }
    }
}

/// The schema's state, as `db version` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    /// The newest migration applied; 0 for an empty database.
    pub current: i64,
    /// The newest migration this build has.
    pub latest: i64,
}

/// The database, through a pool of connections.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// Opens a pool on `url` and checks that one connection can be made; an SQLite file
    /// (and its directory) is created when missing. Does not look at the schema.
    pub async fn connect(url: &DatabaseUrl, settings: &PoolSettings) -> Result<Store> {
        sqlx::any::install_default_drivers();
        if let DatabaseUrl::Sqlite { path } = url {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                    path: dir.to_owned(),
                    source,
                })?;
            }
        }
        let connect_error = |source| StoreError::Connect {
            url: url.to_string(),
            source,
        };
        let options: AnyConnectOptions = url.sqlx_url().parse().map_err(connect_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_pool_size)
            .acquire_timeout(settings.pool_timeout)
            .max_lifetime(settings.connection_recycle_time)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Store {
            pool,
            dialect: url.dialect(),
        })
    }

    /// The pool, for what this module does not offer (tests, measurements).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn migrator(&self) -> &'static Migrator {
        match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::MySql => &MYSQL_MIGRATIONS,
        }
    }

    /// Applies the migrations not applied yet, in order (`db sync`). SQLite is switched to
    /// write-ahead logging first (readers then never wait for the writer; the setting
    /// stays with the file). On MySQL each DDL statement commits by itself, so a failed
    /// migration leaves the schema part-way and marked dirty ([`StoreError::SchemaDirty`]).
    pub async fn sync(&self) -> Result<SchemaVersion> {
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await
                .map_err(query_error("switching SQLite to write-ahead logging"))?;
        }
        let migrator = self.migrator();
        if let Err(e) = migrator.run(&self.pool).await {
            return Err(match e {
                MigrateError::VersionMismatch(version) => StoreError::SchemaMismatch { version },
                MigrateError::Dirty(version) => StoreError::SchemaDirty { version },
                MigrateError::VersionMissing(current) => StoreError::SchemaAhead {
                    current,
                    known: latest_version(migrator),
                },
                other => StoreError::Migrate(other),
            });
        }
        self.version().await
    }

    /// The schema's version, without changing anything (`db version`).
    pub async fn version(&self) -> Result<SchemaVersion> {
        let latest = latest_version(self.migrator());
        let current = self
            .applied()
            .await?
            .iter()
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(0);
        Ok(SchemaVersion { current, latest })
    }

    /// Refuses a schema this build cannot work with: empty, behind (naming
    /// `autoscaler-manage db sync`), ahead, changed, or left dirty. The conductor calls this
    /// before anything else touches the database.
    pub async fn check_schema(&self) -> Result<SchemaVersion> {
        let migrator = self.migrator();
        let latest = latest_version(migrator);
        let applied = self.applied().await?;
        if applied.is_empty() {
            return Err(StoreError::NoSchema);
        }
        if let Some(version) = self.dirty().await? {
            return Err(StoreError::SchemaDirty { version });
        }
        let current = applied.iter().map(|(v, _)| *v).max().unwrap_or(0);
        if current > latest {
            return Err(StoreError::SchemaAhead {
                current,
                known: latest,
            });
        }
        for migration in migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
        {
            match applied.iter().find(|(v, _)| *v == migration.version) {
                None => {
                    return Err(StoreError::SchemaBehind {
                        current,
                        needed: latest,
                    })
                }
                Some((_, checksum)) if *checksum != *migration.checksum => {
                    return Err(StoreError::SchemaMismatch {
                        version: migration.version,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(SchemaVersion { current, latest })
    }

    /// Whether sqlx's bookkeeping table exists: an empty database has none, and reading
    /// it through sqlx would create it.
    async fn has_migrations_table(&self) -> Result<bool> {
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Dialect::MySql => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
            }
        };
        let count: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("looking for the schema"))?;
        Ok(count > 0)
    }

    /// Applied migrations as (version, checksum).
    async fn applied(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        if !self.has_migrations_table().await? {
            return Ok(Vec::new());
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_error("reading the schema version"))?;
        let applied = conn
            .list_applied_migrations()
            .await
            .map_err(StoreError::Migrate)?;
        Ok(applied
            .into_iter()
            .map(|m| (m.version, m.checksum.into_owned()))
            .collect())
    }

    async fn dirty(&self) -> Result<Option<i64>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_error("reading the schema version"))?;
        conn.dirty_version().await.map_err(StoreError::Migrate)
    }

    /// The database's clock, in milliseconds since the epoch, as SQL.
    pub(crate) fn now_ms(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            // The session time zone is +00:00 (sqlx sets it), so UNIX_TIMESTAMP has no DST
            // hour to misread.
            Dialect::MySql => "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)",
        }
    }

    /// The database's clock now (for tests and for comparing with stored times).
    pub async fn now(&self) -> Result<DateTime<Utc>> {
        let ms: i64 = sqlx::query_scalar(&format!("SELECT {}", self.now_ms()))
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("reading the database's clock"))?;
        Ok(from_ms(ms))
    }
}

fn latest_version(migrator: &Migrator) -> i64 {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Milliseconds since the epoch as a time; out-of-range values clamp to the epoch.
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A duration in milliseconds for SQL arithmetic, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `e` is a unique-key violation (a duplicate name).
pub(crate) fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_migrations() {
        let list = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(list(&SQLITE_MIGRATIONS), list(&MYSQL_MIGRATIONS));
        assert_eq!(latest_version(&SQLITE_MIGRATIONS), 2);
    }

    #[test]
    fn errors_name_the_sync_command() {
        let e = StoreError::SchemaBehind {
            current: 1,
            needed: 2,
        };
        assert!(e.to_string().contains("autoscaler-manage db sync"), "{e}");
        assert!(StoreError::NoSchema
            .to_string()
            .contains("autoscaler-manage db sync"));
    }
}
