//! The conductor's RPC vocabulary: what `autoscaler-manage` may ask and what comes back.
//!
//! Requests travel as the payload of an envelope of kind `rpc.request`:
//! `{"method": "template_instantiate", "args": {...}}`. Adding a method is
//! backwards-compatible; an unknown one is answered with an `invalid` error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    messaging::{DropSnapshot, Payload, Role},
    template::Template,
};

/// Everything the CLI can ask the conductor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum Request {
    /// Validate and record a template. The file is read by the CLI, validated there for a
    /// quick answer, and validated again here against the conductor's own limits.
    TemplateInstantiate { source: String, text: String },
    /// Forget (and, from the local-cloud issue on, tear down) the template called `name`.
    TemplateDestroy { name: String },
    /// The active templates, or one of them.
    TemplateShow { name: Option<String> },
    /// The VMs the conductor knows, optionally of one template.
    VmList { template: Option<String> },
    /// The conductor's own health: broker link, counters.
    Status,
}

impl Payload for Request {
    const KIND: &'static str = "rpc.request";
}

/// A template as the conductor holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub template: Template,
    /// The file the operator instantiated it from, as they typed it.
    pub source: String,
    pub instantiated_at: DateTime<Utc>,
}

/// A VM as the conductor knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub vm_id: String,
    pub group: String,
    pub role: Role,
    pub last_heartbeat: DateTime<Utc>,
    /// Seconds since the last heartbeat, at the time of the answer.
    pub heartbeat_age: f64,
    pub heartbeats: u64,
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
