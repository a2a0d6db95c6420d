//! `[DEFAULT]`: the options every autoscaler service reads (messaging transport, identity
//! in messages, logging, state) and their typed form, [`DefaultOpts`].

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};
use crate::messaging::TransportUrl;

pub const SECTION: SectionDecl = SectionDecl {
    name: "DEFAULT",
    help: "Options shared by every autoscaler service: the messaging transport, the \
           service's name in messages, logging and state.",
    opts: &[
        OptDecl::new(
            "transport_url",
            OptKind::TransportUrl,
            Some("rabbit://guest:guest@127.0.0.1:5672/"),
            "The messaging transport, in oslo.messaging's form \
             rabbit://user:pass@host:port/virtual_host. Several comma-separated \
             user:pass@host:port entries name brokers to fail over to, tried in order. \
             User names and passwords are percent-decoded; an empty virtual host (as \
             DevStack writes it) means \"/\". Query parameters: heartbeat (seconds), ssl, \
             connection_timeout (milliseconds).",
        ),
        OptDecl::new(
            "control_exchange",
            OptKind::String,
            Some("autoscaler"),
            "The topic exchange all autoscaler messages go through: heartbeats, metrics, \
             pool updates, RPC and notifications (durable as [oslo_messaging_rabbit] \
             amqp_durable_queues says).",
        ),
        OptDecl::new(
            "host",
            OptKind::String,
            None,
            "The name of this service in messages and notifications. Defaults to this \
             machine's host name.",
        )
        .sample_default("<hostname>"),
        OptDecl::new(
            "debug",
            OptKind::Bool,
            Some("false"),
            "Log at debug level instead of info.",
        )
        .mutable(),
        OptDecl::new(
            "log_dir",
            OptKind::OptionalPath,
            None,
            "Directory of the log file: log_file is relative to it when both are set; \
             with log_dir alone, the log file is <program>.log in it. With neither, the \
             services log to standard output.",
        ),
        OptDecl::new(
            "log_file",
            OptKind::OptionalPath,
            None,
            "Log to this file instead of standard output; relative to log_dir when that \
             is set too.",
        ),
        OptDecl::new(
            "state_path",
            OptKind::Path,
            Some("/var/lib/autoscaler"),
            "Directory where the conductor keeps its state.",
        ),
        OptDecl::new(
            "rpc_response_timeout",
            OptKind::Integer {
                min: Some(1),
                max: Some(3600),
            },
            Some("30"),
            "Seconds the CLI waits for the conductor's answer to a request.",
        ),
        OptDecl::new(
            "max_message_size",
            OptKind::Integer {
                min: Some(1024),
                max: Some(16_777_216),
            },
            Some("65536"),
            "Largest incoming message, in bytes; larger messages are dropped and counted.",
        ),
        OptDecl::new(
            "service_down_time",
            OptKind::Integer {
                min: Some(1),
                max: Some(3600),
            },
            Some("10"),
            "Seconds since a conductor's last report to the database after which it counts \
             as down (autoscaler-manage conductor list).",
        ),
    ],
};

/// `[DEFAULT]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultOpts {
    pub transport_url: TransportUrl,
    pub control_exchange: String,
    pub host: String,
    /// Mutable: reloadable on SIGHUP.
    pub debug: bool,
    pub log_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub state_path: PathBuf,
    pub rpc_response_timeout: Duration,
    /// Bytes.
    pub max_message_size: usize,
    pub service_down_time: Duration,
}

impl DefaultOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        DefaultOpts {
            transport_url: v.transport_url("transport_url"),
            control_exchange: v.string("control_exchange"),
            host: v.string_or_else("host", default_host),
            debug: v.bool("debug"),
            log_dir: v.optional_path("log_dir"),
            log_file: v.optional_path("log_file"),
            state_path: v.path("state_path"),
            rpc_response_timeout: v.duration("rpc_response_timeout"),
            max_message_size: v.int("max_message_size"),
            service_down_time: v.duration("service_down_time"),
        }
    }

    /// Where `program` logs, as oslo.log decides it: `log_dir/log_file`, `log_file`,
    /// `log_dir/<program>.log`, or `None` for standard output.
    pub fn log_path(&self, program: &str) -> Option<PathBuf> {
        match (&self.log_dir, &self.log_file) {
            (Some(dir), Some(file)) => Some(dir.join(file)),
            (None, Some(file)) => Some(file.clone()),
            (Some(dir), None) => Some(dir.join(format!("{program}.log"))),
            (None, None) => None,
        }
    }
}

/// This machine's host name (the kernel's, as `hostname` prints it), or `localhost` when
/// it cannot be read; read once per process.
pub fn default_host() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_logs(log_dir: Option<&str>, log_file: Option<&str>) -> DefaultOpts {
        DefaultOpts {
            log_dir: log_dir.map(PathBuf::from),
            log_file: log_file.map(PathBuf::from),
            ..super::super::Config::default().default
        }
    }

    #[test]
    fn log_path_follows_oslo_log() {
        let p = |d, f| with_logs(d, f).log_path("autoscaler-conductor");
        assert_eq!(p(None, None), None);
        assert_eq!(p(None, Some("a.log")), Some("a.log".into()));
        assert_eq!(
            p(Some("/var/log/autoscaler"), Some("a.log")),
            Some("/var/log/autoscaler/a.log".into())
        );
        assert_eq!(
            p(Some("/var/log/autoscaler"), None),
            Some("/var/log/autoscaler/autoscaler-conductor.log".into())
        );
    }

    #[test]
    fn default_host_is_never_empty() {
        assert!(!default_host().is_empty());
    }
}
