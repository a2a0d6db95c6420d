//! The conductor's RPC vocabulary: what `autoscaler-manage` may ask and what comes back.
//!
//! Requests travel as the payload of an envelope of kind `rpc.request`:
//! `{"method": "template_instantiate", "args": {...}}`. Adding a method is
//! backwards-compatible; an unknown one is answered with an `invalid` error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    driver::VmStatus,
    messaging::{DropSnapshot, Metrics, Payload, Role},
};

pub use autoscaler_core::group::{GroupView, Phase, VmState};
pub use autoscaler_core::template::TemplateRecord;

/// The error kind that means "ask again": the request reached a conductor that does not
/// own the group it is about (several conductors share the request queue; doc/ha.md).
pub const NOT_OWNER: &str = "not_owner";

/// Everything the CLI can ask the conductor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum Request {
    /// Validate and record a template. The file is read by the CLI, validated there for a
    /// quick answer, and validated again here against the conductor's own limits.
    TemplateInstantiate { source: String, text: String },
    /// Tear down the site of the template called `name` (splitter stopped first, then
    /// every VM deleted), then forget it. Answers at once; `template show` follows it.
    TemplateDestroy { name: String },
    /// The active templates, or one of them.
    TemplateShow { name: Option<String> },
    /// The VMs the conductor knows, optionally of one template.
    VmList { template: Option<String> },
    /// Remove web VM `name`: drain it (no new requests, those in flight finish), then
    /// delete it; the template's minimum is kept by booting a replacement. Answers at once.
    VmDelete { name: String },
    /// The conductor's own health: broker link, counters.
    Status,
}

impl Payload for Request {
    const KIND: &'static str = "rpc.request";
}

/// `template show`: the record and how its site is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateView {
    #[serde(flatten)]
    pub record: TemplateRecord,
    pub status: Option<GroupView>,
    /// The splitter's last per-second metrics.
    pub metrics: Option<Metrics>,
    /// The conductor (`[DEFAULT] host`) whose unexpired lease steers the group; `None`
    /// while nobody holds it (between an owner's death and a takeover).
    #[serde(default)]
    pub conductor: Option<String>,
}

/// A VM as the conductor knows it: from the cloud, from its heartbeats, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// The agent's `vm_id`, which is the VM's name.
    pub vm_id: String,
    pub group: String,
    pub role: Option<Role>,
    /// The cloud's id and status; `None` for a VM only heard from (not booted by this
    /// conductor).
    pub cloud_id: Option<String>,
    pub status: Option<VmStatus>,
    pub address: Option<String>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Seconds since the last heartbeat, at the time of the answer.
    pub heartbeat_age: Option<f64>,
    pub heartbeats: u64,
    pub in_pool: bool,
    /// Requests in flight on this VM, from the splitter's last metrics.
    pub busy: Option<u32>,
}

/// `conductor status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub host: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub broker: String,
    pub templates: Vec<String>,
    /// Messages taken from the broker, by queue.
    pub received_requests: u64,
    pub received_telemetry: u64,
    pub dropped: DropSnapshot,
}
