//! The payloads agents publish: what a VM says about itself.
//!
//! Conductor-only requests (the operator CLI's RPC) live with the conductor; only what
//! crosses into a VM is defined here.

use serde::{Deserialize, Serialize};

use crate::envelope::Payload;

/// What a VM does in the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Tomcat web VM behind the splitter.
    Web,
    /// The Apache httpd + mod_jk load splitter.
    Splitter,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Splitter => "splitter",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "web" => Ok(Role::Web),
            "splitter" => Ok(Role::Splitter),
            other => Err(format!("unknown role {other:?}: expected web or splitter")),
        }
    }
}

/// "I am alive", sent by every agent each `[agent] heartbeat_interval` on
/// `heartbeat.<group>.<vm>`, with a short TTL: a late heartbeat is worthless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub group: String,
    pub vm_id: String,
    pub role: Role,
    /// Increments by one per heartbeat from one agent process; restarts at 0 when the
    /// agent restarts, which is how a receiver can tell a reboot from a gap.
    pub seq: u64,
}

impl Payload for Heartbeat {
    const KIND: &'static str = "heartbeat";
}
