//! `[agent]`: how the in-VM agents reach the broker and the rhythm of their heartbeats and
//! metrics, and its typed form,
//! [`AgentOpts`].

use std::time::Duration;

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};
use crate::messaging::{
    signing::{new_secret, KeyFileError, MessageSecrets},
    TransportUrl,
};

pub const SECTION: SectionDecl = SectionDecl {
    name: "agent",
    help: "Heartbeats and metrics of the agents that run in every VM.",
    opts: &[
        OptDecl::new(
            "transport_url",
            OptKind::OptionalTransportUrl,
            None,
            "The broker URL written into every VM's user data, for its agent: a broker \
             user of its own, which may only publish heartbeats, metrics and pool \
             acknowledgements and read splitter queues (doc/security.md gives its exact \
             permissions), and the address the VMs reach the broker by (on OpenStack, the \
             controller's rather than 127.0.0.1). Required: the conductor refuses to \
             start when it is unset or names a user of [DEFAULT] transport_url, unless \
             allow_service_credentials = true.",
        ),
        OptDecl::new(
            "allow_service_credentials",
            OptKind::Bool,
            Some("false"),
            "UNSAFE: let the VMs' user data carry the conductor's own broker login \
             ([DEFAULT] transport_url when transport_url is unset, or a transport_url \
             with the same user). Anyone inside a VM could then run operator requests, \
             read every queue and delete the exchange. For a throw-away test broker only; \
             the conductor logs a warning at start.",
        ),
        OptDecl::new(
            "message_key_file",
            OptKind::OptionalPath,
            None,
            "The secret every VM's message key is derived from (HKDF-SHA256 of it and the \
             VM's name; the VM's key is in its user data only): agents sign every message \
             with it, the conductor signs pool updates, and drops and counts what fails. \
             One key per line, at least 32 characters: the current key, then optionally \
             the previous one, still accepted from VMs booted before a rotation \
             (`autoscaler-manage key create --file F [--rotate]`). Mode 0600, or the \
             conductor refuses to start. Every conductor of a deployment needs the same \
             file. Unset: [DEFAULT] state_path/message.key, made at first start.",
        ),
        OptDecl::new(
            "heartbeat_interval",
            OptKind::Seconds {
                min: 0.1,
                max: Some(60.0),
            },
            Some("1.0"),
            "Seconds between two heartbeats of an agent.",
        ),
        OptDecl::new(
            "telemetry_ttl",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("10"),
            "Time to live of each heartbeat and metrics message on the broker, in \
             seconds: older ones are stale and are discarded unread.",
        ),
        OptDecl::new(
            "max_clock_skew",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("30"),
            "How far, in seconds, a time an agent writes (a message's time, the start of \
             its metrics) may be from the conductor's clock; messages outside the window \
             are dropped and counted before any use of their times. The hosts' clocks \
             agree through NTP, as OpenStack requires.",
        ),
    ],
};

/// `[agent]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOpts {
    pub transport_url: Option<TransportUrl>,
    pub heartbeat_interval: Duration,
    pub telemetry_ttl: Duration,
    pub max_clock_skew: Duration,
    pub allow_service_credentials: bool,
    pub message_key_file: Option<std::path::PathBuf>,
}

impl AgentOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        AgentOpts {
            transport_url: v.optional_transport_url("transport_url"),
            heartbeat_interval: v.duration("heartbeat_interval"),
            telemetry_ttl: v.duration("telemetry_ttl"),
            max_clock_skew: v.duration("max_clock_skew"),
            allow_service_credentials: v.bool("allow_service_credentials"),
            message_key_file: v.optional_path("message_key_file"),
        }
    }

    /// The message key file: `message_key_file`, else `state_path/message.key`.
    pub fn message_key_path(&self, state_path: &std::path::Path) -> std::path::PathBuf {
        self.message_key_file
            .clone()
            .unwrap_or_else(|| state_path.join(MESSAGE_KEY_FILE))
    }

    /// The conductors' message secrets ([`Self::message_key_path`]); the default file is
    /// made (mode 0600, a new random key) when it does not exist yet, a file the
    /// operator named never is.
    pub fn message_secrets(
        &self,
        state_path: &std::path::Path,
    ) -> Result<MessageSecrets, KeyFileError> {
        let path = self.message_key_path(state_path);
        if self.message_key_file.is_none() {
            create_key_file(&path, &new_secret()).map_err(|source| KeyFileError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        MessageSecrets::read(&path)
    }

    /// The broker URL for the VMs' user data, `service` being `[DEFAULT] transport_url`:
    /// refused when it is unset or logs in as one of the service's users, unless
    /// `allow_service_credentials` (then `Ok` with `service_login` true, for the caller to
    /// warn about). A login is the same whatever address or vhost it is used with: a VM
    /// holding it could connect to the service's vhost, so only the user name counts.
    pub fn agent_url<'a>(
        &'a self,
        service: &'a TransportUrl,
    ) -> Result<AgentUrl<'a>, AgentLoginError> {
        let Some(url) = &self.transport_url else {
            return match self.allow_service_credentials {
                true => Ok(AgentUrl {
                    url: service,
                    service_login: true,
                }),
                false => Err(AgentLoginError::Unset),
            };
        };
        let shared = url
            .hosts
            .iter()
            .find(|h| service.hosts.iter().any(|s| s.username == h.username));
        match (shared, self.allow_service_credentials) {
            (Some(host), false) => Err(AgentLoginError::ServiceUser {
                user: host.username.clone(),
            }),
            (shared, _) => Ok(AgentUrl {
                url,
                service_login: shared.is_some(),
            }),
        }
    }
}

/// The message key file's name under `[DEFAULT] state_path` when `message_key_file` is
/// unset.
pub const MESSAGE_KEY_FILE: &str = "message.key";

/// Writes `secret` as a new key file at `path`, mode 0600, unless one exists.
pub fn create_key_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    crate::private_file::create_new(path, format!("{secret}\n").as_bytes()).map(drop)
}

/// The agents' broker URL, and whether it is the service's login (allowed, unsafely).
#[derive(Debug, Clone, Copy)]
pub struct AgentUrl<'a> {
    pub url: &'a TransportUrl,
    pub service_login: bool,
}

/// Why the conductor will not hand its VMs a broker login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentLoginError {
    #[error(
        "[agent] transport_url is not set: the VMs would get the conductor's own broker login \
         ([DEFAULT] transport_url), with which anyone inside a VM can act as the operator. \
         Create a broker user for the agents (doc/security.md) and name it in [agent] \
         transport_url, or set [agent] allow_service_credentials = true (unsafe)"
    )]
    Unset,
    #[error(
        "[agent] transport_url logs in as {user:?}, a user of [DEFAULT] transport_url: the \
         VMs would get the conductor's own broker login. Give the agents a user of their own \
         (doc/security.md), or set [agent] allow_service_credentials = true (unsafe)"
    )]
    ServiceUser { user: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: Option<&str>, allow: bool) -> AgentOpts {
        AgentOpts {
            transport_url: url.map(|u| u.parse().unwrap()),
            heartbeat_interval: Duration::from_secs(1),
            telemetry_ttl: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(30),
            allow_service_credentials: allow,
            message_key_file: None,
        }
    }

    /// Issue 17, item 1: the VMs never get the service's login unless the operator says
    /// so; the user name decides, whatever the address or vhost.
    #[test]
    fn the_service_login_is_refused_unless_allowed() {
        let service: TransportUrl = "rabbit://stackrabbit:pw@127.0.0.1:5672/".parse().unwrap();
        let err = opts(None, false).agent_url(&service).unwrap_err();
        assert_eq!(err, AgentLoginError::Unset);
        assert!(err
            .to_string()
            .starts_with("[agent] transport_url is not set"));
        let same_user = "rabbit://stackrabbit:other@10.0.0.5:5672/other";
        let err = opts(Some(same_user), false)
            .agent_url(&service)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("[agent] transport_url logs in as \"stackrabbit\""),
            "{err}"
        );
        assert!(!err.to_string().contains("other@"), "no password: {err}");
        let allowed = opts(None, true);
        let url = allowed.agent_url(&service).unwrap();
        assert!(url.service_login);
        assert_eq!(url.url, &service);
        let allowed = opts(Some(same_user), true);
        assert!(allowed.agent_url(&service).unwrap().service_login);
        let own = opts(Some("rabbit://agent:pw@10.0.0.5:5672/"), false);
        let url = own.agent_url(&service).unwrap();
        assert!(!url.service_login);
        assert_eq!(url.url.hosts[0].username, "agent");
    }
}
