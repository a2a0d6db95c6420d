//! The cloud's vocabulary: a VM as a cloud driver reports it ([`Vm`], [`VmId`],
//! [`VmStatus`]) and the metadata keys that tie a VM to its group. The driver contract
//! that produces these values (`autoscaler::driver`) documents their rules; they live
//! here, below it, so that the group's rules and the simulator can use them without
//! linking a cloud client.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::payload::Role;

/// Metadata key naming the VM's group (the template's name); required at boot.
pub const META_GROUP: &str = "autoscaler:group";
/// Metadata key naming the VM's role in its group, e.g. `web` or `splitter`.
pub const META_ROLE: &str = "autoscaler:role";
/// Metadata key carrying the template the VM was booted from.
pub const META_TEMPLATE: &str = "autoscaler:template";

/// A VM's id: opaque, chosen by the driver, unique per driver and stable across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmId(pub String);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A VM's status, in Nova's words (and spelling, on the wire and in `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmStatus {
    /// Booting: not yet ready to serve.
    Build,
    /// Booted and running.
    Active,
    /// Booting failed; `Vm::fault` says why. Final.
    Error,
    /// Was running and stopped on its own (a crash). Final.
    Shutoff,
    /// Being deleted.
    Deleted,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Build => "BUILD",
            VmStatus::Active => "ACTIVE",
            VmStatus::Error => "ERROR",
            VmStatus::Shutoff => "SHUTOFF",
            VmStatus::Deleted => "DELETED",
        }
    }
}

impl fmt::Display for VmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VM as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub id: VmId,
    pub name: String,
    pub image: String,
    pub status: VmStatus,
    /// The address its services listen on; `None` until the cloud has given one.
    pub address: Option<IpAddr>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// Why the VM is in `ERROR`, for a person to read.
    pub fault: Option<String>,
}

impl Vm {
    /// The group named by the VM's metadata.
    pub fn group(&self) -> Option<&str> {
        self.metadata.get(META_GROUP).map(String::as_str)
    }
}

impl Vm {
    /// The VM's role in its group, from its metadata; `None` when absent or unknown.
    pub fn role(&self) -> Option<Role> {
        self.metadata.get(META_ROLE).and_then(|r| r.parse().ok())
    }
}
