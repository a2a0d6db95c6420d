//! Oslo-style configuration: INI files (`--config-file`, `--config-dir`, else
//! `/etc/autoscaler/autoscaler.conf`) to a validated, typed [`Config`].
//!
//! Two stages, as house style asks: `ini` turns text into raw `(section, option,
//! value)` entries with oslo.config's syntax rules (no `%` interpolation, no escapes);
//! the declarations check and type them. Each option is declared once, in the file of its
//! section ([`default`], [`rabbit`], [`notifications`], [`conductor`], [`agent`],
//! [`compute`], [`database`], [`local`], [`nova`], [`policy`]): name, kind, default, help, and whether SIGHUP reloads it. The
//! typed structs, the validation and the [`sample`] all come from those declarations.
//!
//! Unknown sections and options are warnings (other OpenStack libraries share the files);
//! bad values are errors naming file, section, option, value and what was expected.

pub mod agent;
mod cidr;
pub mod compute;
pub mod conductor;
pub mod database;
pub mod default;
mod error;
pub(crate) use autoscaler_core::ini;
mod load;
mod local;
pub mod notifications;
pub mod nova;
mod opt;
pub mod policy;
pub mod rabbit;
mod sample;

pub use agent::{AgentLoginError, AgentOpts, AgentUrl};
pub use cidr::CidrV4;
pub use compute::{ComputeDriver, ComputeOpts};
pub use conductor::ConductorOpts;
pub use database::DatabaseOpts;
pub use default::DefaultOpts;
pub use error::{ConfError, ConfWarning};
pub use load::{
    load, load_from_str, load_from_strs, validate, validate_strs, ConfigSources, Loaded, Report,
    DEFAULT_CONFIG_FILE,
};
pub use local::LocalOpts;
pub use notifications::{NotificationDriver, NotificationOpts};
pub use nova::{AuthType, NovaOpts, Secret};
pub use opt::{redact_transport_url, Choice, OptDecl, OptKind, SectionDecl};
pub use policy::PolicyOpts;
pub use rabbit::RabbitOpts;
pub use sample::sample;

use crate::messaging::{LinkConfig, Topology};
use opt::{SectionValues, Values};

/// Every section, in the order of the sample (oslo's: `DEFAULT`, then alphabetical).
pub const SECTIONS: &[&SectionDecl] = &[
    &default::SECTION,
    &agent::SECTION,
    &compute::SECTION,
    &conductor::SECTION,
    &database::SECTION,
    &local::SECTION,
    &nova::SECTION,
    &notifications::SECTION,
    &policy::SECTION,
    &rabbit::SECTION,
];

/// The whole configuration, typed; fields are spelled as the oslo sections and options.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub default: DefaultOpts,
    pub oslo_messaging_rabbit: RabbitOpts,
    pub oslo_messaging_notifications: NotificationOpts,
    pub conductor: ConductorOpts,
    pub agent: AgentOpts,
    pub compute: ComputeOpts,
    pub database: DatabaseOpts,
    pub local: LocalOpts,
    pub nova: NovaOpts,
    pub policy: PolicyOpts,
}

impl Default for Config {
    /// Every option at its declared default (`host` is this machine's name).
    fn default() -> Self {
        Config::from_values(&Values::new())
    }
}

impl Config {
    /// Builds the typed config from validated values, defaults filling the rest.
    fn from_values(values: &Values) -> Self {
        fn section<T>(
            decl: &'static SectionDecl,
            values: &Values,
            build: fn(&SectionValues<'_>) -> T,
        ) -> T {
            let v = SectionValues::new(decl, values);
            let typed = build(&v);
            debug_assert!(
                v.unread().is_empty(),
                "[{}] declares options no field reads: {:?}",
                decl.name,
                v.unread()
            );
            typed
        }
        Config {
            default: section(&default::SECTION, values, DefaultOpts::from_values),
            oslo_messaging_rabbit: section(&rabbit::SECTION, values, RabbitOpts::from_values),
            oslo_messaging_notifications: section(
                &notifications::SECTION,
                values,
                NotificationOpts::from_values,
            ),
            conductor: section(&conductor::SECTION, values, ConductorOpts::from_values),
            agent: section(&agent::SECTION, values, AgentOpts::from_values),
            compute: section(&compute::SECTION, values, ComputeOpts::from_values),
            database: section(&database::SECTION, values, DatabaseOpts::from_values),
            local: section(&local::SECTION, values, LocalOpts::from_values),
            nova: section(&nova::SECTION, values, NovaOpts::from_values),
            policy: section(&policy::SECTION, values, policy::from_values),
        }
    }

    /// The database: `[database] connection`, or the SQLite file under `state_path`.
    pub fn database_url(&self) -> crate::store::DatabaseUrl {
        self.database.url(&self.default.state_path)
    }

    /// The broker link's settings: `[DEFAULT] transport_url` with the
    /// `[oslo_messaging_rabbit]` tuning.
    pub fn link_config(&self, connection_name: impl Into<String>) -> LinkConfig {
        let rabbit = &self.oslo_messaging_rabbit;
        LinkConfig {
            heartbeat: rabbit.heartbeat_secs(),
            retry_interval: rabbit.rabbit_retry_interval,
            retry_backoff: rabbit.rabbit_retry_backoff,
            interval_max: rabbit.rabbit_interval_max,
            ..LinkConfig::new(self.default.transport_url.clone(), connection_name)
        }
    }

    /// The broker users whose requests the conductor carries out: `[conductor]
    /// rpc_allowed_users`, or the users of `[DEFAULT] transport_url` when it is empty.
    pub fn rpc_allowed_users(&self) -> Vec<String> {
        if !self.conductor.rpc_allowed_users.is_empty() {
            return self.conductor.rpc_allowed_users.clone();
        }
        let mut users: Vec<String> = (self.default.transport_url.hosts.iter())
            .map(|h| h.username.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// The exchange (`[DEFAULT] control_exchange`) and its declarations' durability
    /// (`[oslo_messaging_rabbit] amqp_durable_queues`).
    pub fn topology(&self) -> Topology {
        Topology::new(
            self.default.control_exchange.clone(),
            self.oslo_messaging_rabbit.durability(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;

    #[test]
    fn defaults_are_the_declared_ones() {
        let c = Config::default();
        let url = &c.default.transport_url;
        assert_eq!(
            (
                url.hosts[0].username.as_str(),
                url.hosts[0].hostname.as_str()
            ),
            ("guest", "127.0.0.1")
        );
        assert_eq!(url.hosts[0].port, 5672);
        assert_eq!(url.virtual_host, "/");
        assert_eq!(c.default.control_exchange, "autoscaler");
        assert_eq!(c.default.host, default::default_host());
        assert!(!c.default.debug);
        assert_eq!(c.default.log_dir, None);
        assert_eq!(c.default.log_file, None);
        assert_eq!(c.default.state_path, PathBuf::from("/var/lib/autoscaler"));
        assert_eq!(c.default.rpc_response_timeout, Duration::from_secs(30));
        assert_eq!(c.default.max_message_size, 65536);
        assert_eq!(c.default.service_down_time, Duration::from_secs(10));
        assert_eq!(c.database.connection, None);
        assert_eq!(c.database.max_pool_size, 5);
        let r = &c.oslo_messaging_rabbit;
        assert_eq!(r.heartbeat_timeout_threshold, Duration::from_secs(60));
        assert_eq!(r.rabbit_retry_interval, Duration::from_secs(1));
        assert_eq!(r.rabbit_retry_backoff, Duration::from_secs(2));
        assert_eq!(r.rabbit_interval_max, Duration::from_secs(30));
        let n = &c.oslo_messaging_notifications;
        assert_eq!(n.driver, [NotificationDriver::MessagingV2]);
        assert_eq!(n.topics, ["notifications"]);
        assert_eq!(c.conductor.max_vms_ceiling, 20);
        assert_eq!(c.conductor.telemetry_queue_length, 10_000);
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.agent.telemetry_ttl, Duration::from_secs(10));
    }

    #[test]
    fn declarations_are_sound() {
        let mut names = std::collections::BTreeSet::new();
        for section in SECTIONS {
            assert!(names.insert(section.name), "section {} twice", section.name);
            let mut opts = std::collections::BTreeSet::new();
            for opt in section.opts {
                assert!(
                    opts.insert(opt.name),
                    "[{}] {} twice",
                    section.name,
                    opt.name
                );
                assert!(!opt.help.is_empty());
                if let Some(default) = opt.default {
                    assert!(
                        opt.kind.parse(default).is_ok(),
                        "[{}] {} default {default:?}",
                        section.name,
                        opt.name
                    );
                }
            }
        }
    }

    #[test]
    fn only_debug_is_mutable() {
        let mutable: Vec<&str> = SECTIONS
            .iter()
            .flat_map(|s| s.opts)
            .filter(|o| o.mutable)
            .map(|o| o.name)
            .collect();
        assert_eq!(mutable, ["debug"]);
    }

    #[test]
    fn integer_bounds_fit_their_fields() {
        // Config::from_values panics if a validated value does not fit its field's type.
        for pick in [
            |min: Option<i64>, _| min.unwrap_or(i64::MIN),
            |_, max: Option<i64>| max.unwrap_or(i64::MAX),
        ] {
            let mut values = Values::new();
            for section in SECTIONS {
                for opt in section.opts {
                    if let OptKind::Integer { min, max } = opt.kind {
                        let n = pick(min, max);
                        values.insert((section.name, opt.name), opt::Value::Integer(n));
                    }
                }
            }
            Config::from_values(&values);
        }
    }

    #[test]
    fn link_config_carries_the_rabbit_tuning() {
        let text =
            "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 15\nrabbit_interval_max = 5\n";
        let link = load_from_str("a", text).unwrap().config.link_config("test");
        assert_eq!(link.heartbeat, 15);
        assert_eq!(link.interval_max, Duration::from_secs(5));
        assert_eq!(link.retry_delay(10), Duration::from_secs(5));
        assert_eq!(link.connection_name, "test");
    }
}
