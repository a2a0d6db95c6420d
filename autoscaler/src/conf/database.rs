//! `[database]`: where the service keeps what it decided (templates, VM intents, service
//! records, group leases), with oslo.db's option names, and its typed form,
//! [`DatabaseOpts`]. The database itself is `crate::store`.

use std::{path::Path, time::Duration};

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};
use crate::store::{DatabaseUrl, PoolSettings};

pub const SECTION: SectionDecl = SectionDecl {
    name: "database",
    help: "The database, named and tuned as oslo.db does it.",
    opts: &[
        OptDecl::new(
            "connection",
            OptKind::OptionalDatabaseUrl,
            None,
            "The database, as an oslo.db URL: sqlite:///relative/path or \
             sqlite:////absolute/path for an SQLite file (created when missing), or \
             mysql+pymysql://user:password@host[:port]/autoscaler?charset=utf8 (also \
             mysql://) for MySQL or MariaDB, whose database must exist. The password is \
             percent-decoded and never shown. Unset: an SQLite file in state_path. Create \
             or upgrade the schema with `autoscaler-manage db sync`.",
        )
        .sample_default("<sqlite:///$state_path/autoscaler.sqlite>"),
        OptDecl::new(
            "max_pool_size",
            OptKind::Integer {
                min: Some(1),
                max: Some(1000),
            },
            Some("5"),
            "Most connections a service keeps open to the database.",
        ),
        OptDecl::new(
            "pool_timeout",
            OptKind::Integer {
                min: Some(1),
                max: Some(3600),
            },
            Some("30"),
            "Seconds to wait for a free connection of the pool before the operation fails.",
        ),
        OptDecl::new(
            "connection_recycle_time",
            OptKind::Integer {
                min: Some(1),
                max: None,
            },
            Some("3600"),
            "Seconds after which a connection is closed and replaced by a new one. Keep it \
             below the MySQL server's wait_timeout, which drops idle connections.",
        ),
    ],
};

/// `[database]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseOpts {
    /// `None`: the default, computed from `[DEFAULT] state_path` ([`Self::url`]).
    pub connection: Option<DatabaseUrl>,
    pub max_pool_size: u32,
    pub pool_timeout: Duration,
    pub connection_recycle_time: Duration,
}

impl DatabaseOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        DatabaseOpts {
            connection: v.optional_database_url("connection"),
            max_pool_size: v.int("max_pool_size"),
            pool_timeout: v.duration("pool_timeout"),
            connection_recycle_time: v.duration("connection_recycle_time"),
        }
    }

    /// The database: `connection`, or `sqlite:///<state_path>/autoscaler.sqlite`.
    pub fn url(&self, state_path: &Path) -> DatabaseUrl {
        self.connection
            .clone()
            .unwrap_or_else(|| DatabaseUrl::default_for(state_path))
    }

    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_pool_size: self.max_pool_size,
            pool_timeout: self.pool_timeout,
            connection_recycle_time: self.connection_recycle_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{load_from_str, Config};

    #[test]
    fn the_default_database_is_sqlite_under_state_path() {
        let c = load_from_str("a", "[DEFAULT]\nstate_path = /srv/as\n")
            .unwrap()
            .config;
        assert_eq!(
            c.database_url().to_string(),
            "sqlite:////srv/as/autoscaler.sqlite"
        );
        let d = Config::default().database;
        assert_eq!(d.pool_settings(), crate::store::PoolSettings::default());
    }

    #[test]
    fn a_mysql_connection_is_parsed_and_its_password_never_shown() {
        let text =
            "[database]\nconnection = mysql+pymysql://as:s3cret@db/autoscaler?charset=utf8\n";
        let c = load_from_str("a", text).unwrap().config;
        assert_eq!(
            c.database_url().to_string(),
            "mysql+pymysql://as:***@db/autoscaler"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let bad = "[database]\nconnection = mysql+pymysql://as:s3cret@db\n";
        let errors = load_from_str("a", bad).unwrap_err().to_string();
        assert!(errors.contains("no database"), "{errors}");
        assert!(!errors.contains("s3cret"), "{errors}");
    }
}
