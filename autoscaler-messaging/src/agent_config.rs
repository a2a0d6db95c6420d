//! The agent's configuration and the user data that carries it into a VM.
//!
//! The conductor writes an [`AgentConfig`] as a small INI file (`[agent]` section) and
//! wraps it in a cloud-config document, the VM's user data. On Nova, cloud-init writes
//! the file to [`AGENT_CONFIG_PATH`] and the image's systemd unit starts
//! `autoscaler-agent --config-file /etc/autoscaler/agent.conf`; on the local cloud, the
//! image's boot script asks `autoscaler-agent write-files` to do the same into the VM's
//! directory. One document, two clouds, no manual step.
//!
//! The cloud-config is written as JSON after the `#cloud-config` line: JSON is YAML, so
//! cloud-init reads it, and the agent reads it without a YAML parser.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use autoscaler_core::ini::{self, IniError};
use serde::{Deserialize, Serialize};

use crate::{payload::Role, signing::VmKey, TransportUrl};

/// Where cloud-init writes the agent's configuration inside a VM.
pub const AGENT_CONFIG_PATH: &str = "/etc/autoscaler/agent.conf";

/// Everything an agent needs to know, from the conductor.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The broker URL as written (with its password: the file is mode 0600).
    pub transport_url: String,
    pub control_exchange: String,
    pub group: String,
    pub role: Role,
    pub vm_id: String,
    pub heartbeat_interval: Duration,
    pub telemetry_ttl: Duration,
    /// The conductor's `[oslo_messaging_rabbit] amqp_durable_queues`: the agent declares
    /// the exchange as the conductor does (RabbitMQ refuses a declaration that differs).
    /// Absent from the file: false, oslo.messaging's and the conductor's default.
    pub amqp_durable_queues: bool,
    /// The longest the agent's local check (the page behind `serving`) may take; the
    /// conductor derives it from the template's target. Absent from the file:
    /// [`DEFAULT_CHECK_TIMEOUT`].
    pub check_timeout: Duration,
    /// This VM's message key ([`crate::signing`]): it signs every message the agent
    /// publishes and checks the pool updates it receives. Written to the file in base64,
    /// never logged.
    pub message_key: VmKey,
}

/// The check's timeout of an agent configured without one (an older conductor).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// An agent configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    /// Lines oslo's INI syntax refuses, every one of the file (never quoted: a line may
    /// hold the broker password).
    #[error("{}", IniErrors(.0))]
    Ini(Vec<IniError>),
    #[error("{source_name}: [agent] {key} is missing")]
    Missing {
        source_name: String,
        key: &'static str,
    },
    #[error("{source_name}: [agent] {key} = {value:?}: expected {expected}")]
    BadValue {
        source_name: String,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{source_name}: not a cloud-config user data document ({detail})")]
    UserData { source_name: String, detail: String },
}

/// The INI errors of one file, one a line.
struct IniErrors<'a>(&'a [IniError]);

impl std::fmt::Display for IniErrors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A file for cloud-init's `write_files` module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    #[serde(default = "default_permissions")]
    pub permissions: String,
}

fn default_permissions() -> String {
    "0644".to_owned()
}

/// The subset of cloud-config the autoscaler writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CloudConfig {
    #[serde(default)]
    pub write_files: Vec<WriteFile>,
    /// Commands cloud-init runs last (on Nova: start the agent's unit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runcmd: Vec<Vec<String>>,
}

impl CloudConfig {
    /// The user data text: `#cloud-config` and the document as JSON.
    pub fn to_user_data(&self) -> String {
        format!(
            "#cloud-config\n{}\n",
            serde_json::to_string_pretty(self).expect("cloud-config serializes")
        )
    }

    /// Reads user data written by [`CloudConfig::to_user_data`].
    pub fn from_user_data(source_name: &str, text: &str) -> Result<CloudConfig, AgentConfigError> {
        let bad = |detail: String| AgentConfigError::UserData {
            source_name: source_name.to_owned(),
            detail,
        };
        let body = text
            .strip_prefix("#cloud-config")
            .ok_or_else(|| bad("it does not start with #cloud-config".into()))?;
        serde_json::from_str(body).map_err(|e| bad(e.to_string()))
    }

    /// The content of the file cloud-init would write at `path`.
    pub fn file(&self, path: &str) -> Option<&str> {
        self.write_files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.content.as_str())
    }
}

impl AgentConfig {
    /// The `[agent]` INI text.
    pub fn to_ini(&self) -> String {
        let mut out = String::from("# Written by autoscaler-conductor for this VM.\n[agent]\n");
        let _ = writeln!(out, "transport_url = {}", self.transport_url);
        let _ = writeln!(out, "control_exchange = {}", self.control_exchange);
        let _ = writeln!(out, "group = {}", self.group);
        let _ = writeln!(out, "role = {}", self.role);
        let _ = writeln!(out, "vm_id = {}", self.vm_id);
        let _ = writeln!(
            out,
            "heartbeat_interval = {}",
            self.heartbeat_interval.as_secs_f64()
        );
        let _ = writeln!(out, "telemetry_ttl = {}", self.telemetry_ttl.as_secs_f64());
        let _ = writeln!(out, "amqp_durable_queues = {}", self.amqp_durable_queues);
        let _ = writeln!(out, "check_timeout = {}", self.check_timeout.as_secs_f64());
        let _ = writeln!(out, "message_key = {}", self.message_key.to_base64());
        out
    }

    /// Parses the `[agent]` INI text with oslo.config's line rules (the core's
    /// [`ini`](autoscaler_core::ini) reader, the conductor's): `#`/`;` comment lines,
    /// indented lines continue a value, a value wholly in matching quotes loses them, a
    /// repeated key's last value wins, section names are case-insensitive, and an option
    /// before any section header is refused. Other sections and unknown keys are ignored,
    /// so an older agent in an image keeps working with a newer conductor.
    pub fn from_ini(source_name: &str, text: &str) -> Result<AgentConfig, AgentConfigError> {
        let values = Values {
            source_name,
            map: agent_section(source_name, text)?,
        };
        let transport_url = values.required("transport_url")?;
        if transport_url.parse::<TransportUrl>().is_err() {
            // The value is not repeated: it may hold a password.
            return Err(values.bad(
                "transport_url",
                "(hidden)",
                "a transport URL such as rabbit://user:pass@host:5672/",
            ));
        }
        let role_text = values.required("role")?;
        let role = role_text
            .parse::<Role>()
            .map_err(|_| values.bad("role", &role_text, "web or splitter"))?;
        Ok(AgentConfig {
            transport_url,
            control_exchange: values
                .map
                .get("control_exchange")
                .cloned()
                .unwrap_or_else(|| "autoscaler".into()),
            group: values.non_empty("group")?,
            role,
            vm_id: values.non_empty("vm_id")?,
            heartbeat_interval: values.seconds("heartbeat_interval", 1.0)?,
            telemetry_ttl: values.seconds("telemetry_ttl", 10.0)?,
            amqp_durable_queues: values.boolean("amqp_durable_queues", false)?,
            check_timeout: values.seconds("check_timeout", DEFAULT_CHECK_TIMEOUT.as_secs_f64())?,
            // The value is not repeated: it is the VM's secret.
            message_key: VmKey::from_base64(&values.required("message_key")?)
                .map_err(|_| values.bad("message_key", "(hidden)", "32 bytes in base64"))?,
        })
    }

    /// The VM's user data: a cloud-config that writes this configuration (mode 0600, it
    /// holds the broker password) and starts the agent's unit.
    pub fn to_user_data(&self) -> String {
        self.cloud_config().to_user_data()
    }

    /// The cloud-config of [`AgentConfig::to_user_data`], for callers that add files.
    pub fn cloud_config(&self) -> CloudConfig {
        CloudConfig {
            write_files: vec![WriteFile {
                path: AGENT_CONFIG_PATH.to_owned(),
                content: self.to_ini(),
                permissions: "0600".to_owned(),
            }],
            runcmd: vec![vec![
                "systemctl".into(),
                "enable".into(),
                "--now".into(),
                "autoscaler-agent.service".into(),
            ]],
        }
    }

    /// The configuration carried by user data made with [`AgentConfig::to_user_data`].
    pub fn from_user_data(source_name: &str, text: &str) -> Result<AgentConfig, AgentConfigError> {
        let cloud_config = CloudConfig::from_user_data(source_name, text)?;
        let ini =
            cloud_config
                .file(AGENT_CONFIG_PATH)
                .ok_or_else(|| AgentConfigError::UserData {
                    source_name: source_name.to_owned(),
                    detail: format!("no write_files entry for {AGENT_CONFIG_PATH}"),
                })?;
        AgentConfig::from_ini(source_name, ini)
    }
}

/// The `[agent]` section's keys and values (the last of a repeated key), read by the
/// core's oslo INI reader.
fn agent_section(
    source_name: &str,
    text: &str,
) -> Result<BTreeMap<String, String>, AgentConfigError> {
    let sections = ini::parse(Path::new(source_name), text, ini::Keys::InSections)
        .map_err(AgentConfigError::Ini)?;
    Ok(sections
        .into_iter()
        .filter(|section| section.name == "agent")
        .flat_map(|section| section.entries)
        .collect())
}

/// The `[agent]` values of one file and how each is read.
struct Values<'a> {
    source_name: &'a str,
    map: BTreeMap<String, String>,
}

impl Values<'_> {
    fn bad(&self, key: &str, value: &str, expected: &'static str) -> AgentConfigError {
        AgentConfigError::BadValue {
            source_name: self.source_name.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        }
    }

    fn required(&self, key: &'static str) -> Result<String, AgentConfigError> {
        self.map
            .get(key)
            .cloned()
            .ok_or_else(|| AgentConfigError::Missing {
                source_name: self.source_name.to_owned(),
                key,
            })
    }

    fn non_empty(&self, key: &'static str) -> Result<String, AgentConfigError> {
        let v = self.required(key)?;
        if v.is_empty() {
            return Err(self.bad(key, &v, "a non-empty value"));
        }
        Ok(v)
    }

    /// Seconds, more than 0 and at most an hour; `default` when absent.
    fn seconds(&self, key: &'static str, default: f64) -> Result<Duration, AgentConfigError> {
        match self.map.get(key) {
            None => Ok(Duration::from_secs_f64(default)),
            Some(v) => match v.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
                _ => Err(self.bad(key, v, "seconds, more than 0 and at most 3600")),
            },
        }
    }

    /// oslo.config's boolean spellings, as the conductor's options take them.
    fn boolean(&self, key: &'static str, default: bool) -> Result<bool, AgentConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(self.bad(key, v, "true or false")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentConfig {
        AgentConfig {
            transport_url: "rabbit://u:p%40ss@127.0.0.1:5672/".into(),
            control_exchange: "autoscaler".into(),
            group: "shop".into(),
            role: Role::Splitter,
            vm_id: "shop-splitter-1".into(),
            heartbeat_interval: Duration::from_millis(500),
            telemetry_ttl: Duration::from_secs(10),
            amqp_durable_queues: true,
            check_timeout: Duration::from_secs(4),
            message_key: crate::signing::MessageSecrets::new(&[7; 32], None)
                .vm_key("shop-splitter-1"),
        }
    }

    #[test]
    fn the_check_timeout_is_carried_and_defaults_to_one_second() {
        let ini = sample().to_ini();
        assert!(ini.contains("check_timeout = 4\n"), "{ini}");
        let back = AgentConfig::from_ini("a", &ini).unwrap();
        assert_eq!(back.check_timeout, Duration::from_secs(4));
        let without = ini.replace("check_timeout = 4\n", "");
        let old = AgentConfig::from_ini("a", &without).unwrap();
        assert_eq!(old.check_timeout, DEFAULT_CHECK_TIMEOUT);
        assert!(AgentConfig::from_ini("a", &ini.replace("= 4\n", "= 0\n")).is_err());
    }

    #[test]
    fn durability_is_carried_and_defaults_to_oslos() {
        let ini = sample().to_ini();
        assert!(ini.contains("amqp_durable_queues = true\n"), "{ini}");
        let without = ini.replace("amqp_durable_queues = true\n", "");
        assert!(
            !AgentConfig::from_ini("a", &without)
                .unwrap()
                .amqp_durable_queues
        );
        let yes = ini.replace("= true\n", "= Yes\n");
        assert!(
            AgentConfig::from_ini("a", &yes)
                .unwrap()
                .amqp_durable_queues
        );
        assert_eq!(
            AgentConfig::from_ini("a", &ini.replace("= true\n", "= maybe\n"))
                .unwrap_err()
                .to_string(),
            "a: [agent] amqp_durable_queues = \"maybe\": expected true or false"
        );
    }

    #[test]
    fn user_data_round_trip() {
        let user_data = sample().to_user_data();
        assert!(user_data.starts_with("#cloud-config\n{"));
        assert_eq!(
            AgentConfig::from_user_data("user-data", &user_data).unwrap(),
            sample()
        );
        let cc = CloudConfig::from_user_data("user-data", &user_data).unwrap();
        assert_eq!(cc.write_files[0].permissions, "0600");
    }

    /// The file follows oslo.config's line rules, as the conductor's own configuration.
    #[test]
    fn the_file_follows_oslos_ini_rules() {
        let ini = sample().to_ini();
        let read = |text: &str| AgentConfig::from_ini("agent.conf", text);
        // Comment lines with `#` or `;`; a `#` inside a value is part of it.
        let commented = ini.replace(
            "group = shop\n",
            "; the group\n# group = other\ngroup = shop # not a comment\n",
        );
        assert_eq!(read(&commented).unwrap().group, "shop # not a comment");
        // A repeated key: the last value wins.
        let twice = ini.replace("group = shop\n", "group = first\ngroup = shop\n");
        assert_eq!(read(&twice).unwrap(), sample());
        // Quotes wrapping the whole value go; `:` separates as `=` does; section names
        // are case-insensitive; a section written twice adds to the first.
        let oslo = ini
            .replace("group = shop", "group: \"shop\"")
            .replace("[agent]", "[AGENT]")
            .replace(
                "vm_id = shop-splitter-1\n",
                "[other]\nx = 1\n[agent]\nvm_id = 'shop-splitter-1'\n",
            );
        assert_eq!(read(&oslo).unwrap(), sample());
        // An indented line continues the value above; after a blank line it is refused.
        let continued = ini.replace("group = shop\n", "group = shop\n  more\n");
        assert_eq!(read(&continued).unwrap().group, "shop\nmore");
        let orphan = ini.replace("group = shop\n", "group = shop\n\n  more\n");
        assert!(read(&orphan)
            .unwrap_err()
            .to_string()
            .starts_with("agent.conf: line 7: unexpected continuation line"));
        // An option before any section header is refused, naming the option.
        let outside = format!("debug = true\n{ini}");
        assert_eq!(
            read(&outside).unwrap_err().to_string(),
            "agent.conf: line 1: option \"debug\" is outside any section \
             (add a [DEFAULT] or other section header above it)"
        );
        // Every bad line at once, none of them quoted (a line may hold the password).
        let err = read(&ini.replace(
            "rabbit://u:p%40ss@127.0.0.1:5672/\n",
            "rabbit://u:p%40ss@127.0.0.1:5672/\nsecretword\n[broken\n",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(!err.contains("secretword"), "{err}");
    }

    #[test]
    fn errors_name_source_and_key() {
        let ini = sample().to_ini();
        let cases = [
            (ini.replace("role = splitter", "role = db"), "agent.conf: [agent] role = \"db\": expected web or splitter"),
            (ini.replace("vm_id = shop-splitter-1\n", ""), "agent.conf: [agent] vm_id is missing"),
            (ini.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0"), "agent.conf: [agent] heartbeat_interval = \"0\": expected seconds, more than 0 and at most 3600"),
            (ini.replace("rabbit://u:p%40ss@", "kafka://u:p%40ss@"), "agent.conf: [agent] transport_url = \"(hidden)\": expected a transport URL such as rabbit://user:pass@host:5672/"),
            (ini.replace("group = shop", "group"), "agent.conf: line 5: expected `name = value`, a [section] header or a comment"),
        ];
        for (text, want) in cases {
            assert_eq!(
                AgentConfig::from_ini("agent.conf", &text)
                    .unwrap_err()
                    .to_string(),
                want
            );
        }
        let err = AgentConfig::from_user_data("ud", "#!/bin/sh\necho hi\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ud: not a cloud-config"), "{err}");
    }
}
