//! What the service tells operators: the notifications it emits ([`Notification`], one
//! variant per event type, each with its payload and priority), why a VM failed
//! ([`Cause`]), and oslo.messaging's priorities. The oslo message format they travel in is
//! `autoscaler-messaging`'s.

use serde::{Deserialize, Serialize};

use crate::{cloud::VmStatus, payload::Role, template::TemplateRecord};

/// oslo.messaging's priorities, in its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    Audit,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
    Sample,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Audit => "AUDIT",
            Priority::Debug => "DEBUG",
            Priority::Info => "INFO",
            Priority::Warn => "WARN",
            Priority::Error => "ERROR",
            Priority::Critical => "CRITICAL",
            Priority::Sample => "SAMPLE",
        }
    }
}

/// Why a VM was declared failed (the `cause` of `autoscaler.vm.failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The cloud reports it `ERROR` or `SHUTOFF`.
    Status,
    /// `ACTIVE`, heard before, silent for `heartbeat_timeout` while others are heard.
    HeartbeatLost,
    /// Not `ACTIVE` and heard from within `boot_timeout`.
    BootTimeout,
    /// Its agent says its server has not answered for `heartbeat_timeout`, once past
    /// `boot_timeout`.
    NotServing,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Status => "status",
            Cause::HeartbeatLost => "heartbeat_lost",
            Cause::BootTimeout => "boot_timeout",
            Cause::NotServing => "not_serving",
        }
    }
}

/// Which way a scaling decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// `autoscaler.vm.failed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmFailed {
    pub template: String,
    pub vm_id: String,
    pub vm_name: String,
    pub role: Option<Role>,
    pub status: VmStatus,
    pub cause: Cause,
    pub fault: Option<String>,
}

/// `autoscaler.vm.replaced`: a boot replacing a failed VM was accepted by the cloud.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmReplaced {
    pub template: String,
    pub role: Role,
    pub failed_vm_name: String,
    pub vm_name: String,
    pub vm_id: String,
}

/// `autoscaler.vm.boot_failed`: the cloud refused a boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmBootFailed {
    pub template: String,
    pub vm_name: String,
    pub role: Role,
    pub error: String,
    pub retryable: bool,
}

/// `autoscaler.scale.up` and `.down`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaled {
    #[serde(skip)]
    pub direction: Direction,
    pub template: String,
    /// The size decided before, if any.
    pub from: Option<u32>,
    pub to: u32,
    pub add: u32,
    pub remove: Vec<String>,
    pub metric: Option<f64>,
    pub reason: String,
}

/// `autoscaler.template.ready`: the site answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateReady {
    pub template: String,
    pub url: Option<String>,
    pub web_vms: usize,
}

/// `autoscaler.vm.delete.start`: the operator asked for a web VM to go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmDeleteStart {
    pub template: String,
    pub vm_name: String,
}

/// `autoscaler.pool.rejected`: the splitter refused a pool update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolRejected {
    pub template: String,
    pub splitter: String,
    pub generation: u64,
    pub reason: String,
}

/// Every notification the service emits: each knows its event type, priority and
/// payload (as Nova's versioned notification objects do). `doc/messaging.md` lists them
/// for operators; the payloads' field names are a contract with their consumers.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    TemplateInstantiated(TemplateRecord),
    TemplateReady(TemplateReady),
    TemplateDestroyStart(TemplateRecord),
    TemplateDestroyed(TemplateRecord),
    Scaled(Scaled),
    VmFailed(VmFailed),
    VmReplaced(VmReplaced),
    VmBootFailed(VmBootFailed),
    VmDeleteStart(VmDeleteStart),
    PoolRejected(PoolRejected),
}

impl Notification {
    /// Every event type, for documentation and tests.
    pub const EVENT_TYPES: [&'static str; 11] = [
        "autoscaler.template.instantiated",
        "autoscaler.template.ready",
        "autoscaler.template.destroy.start",
        "autoscaler.template.destroyed",
        "autoscaler.scale.up",
        "autoscaler.scale.down",
        "autoscaler.vm.failed",
        "autoscaler.vm.replaced",
        "autoscaler.vm.boot_failed",
        "autoscaler.vm.delete.start",
        "autoscaler.pool.rejected",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            Notification::TemplateInstantiated(_) => "autoscaler.template.instantiated",
            Notification::TemplateReady(_) => "autoscaler.template.ready",
            Notification::TemplateDestroyStart(_) => "autoscaler.template.destroy.start",
            Notification::TemplateDestroyed(_) => "autoscaler.template.destroyed",
            Notification::Scaled(s) => match s.direction {
                Direction::Up => "autoscaler.scale.up",
                Direction::Down => "autoscaler.scale.down",
            },
            Notification::VmFailed(_) => "autoscaler.vm.failed",
            Notification::VmReplaced(_) => "autoscaler.vm.replaced",
            Notification::VmBootFailed(_) => "autoscaler.vm.boot_failed",
            Notification::VmDeleteStart(_) => "autoscaler.vm.delete.start",
            Notification::PoolRejected(_) => "autoscaler.pool.rejected",
        }
    }

    pub fn priority(&self) -> Priority {
        match self {
            Notification::VmFailed(f) if f.cause == Cause::Status => Priority::Error,
            Notification::VmFailed(_) => Priority::Warn,
            Notification::VmBootFailed(_) | Notification::PoolRejected(_) => Priority::Error,
            _ => Priority::Info,
        }
    }

    /// The template the notification is about.
    pub fn template(&self) -> &str {
        match self {
            Notification::TemplateInstantiated(r)
            | Notification::TemplateDestroyStart(r)
            | Notification::TemplateDestroyed(r) => r.template.name(),
            Notification::TemplateReady(p) => &p.template,
            Notification::Scaled(p) => &p.template,
            Notification::VmFailed(p) => &p.template,
            Notification::VmReplaced(p) => &p.template,
            Notification::VmBootFailed(p) => &p.template,
            Notification::VmDeleteStart(p) => &p.template,
            Notification::PoolRejected(p) => &p.template,
        }
    }

    /// The payload, as JSON.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            Notification::TemplateInstantiated(r)
            | Notification::TemplateDestroyStart(r)
            | Notification::TemplateDestroyed(r) => serde_json::to_value(r),
            Notification::TemplateReady(p) => serde_json::to_value(p),
            Notification::Scaled(p) => serde_json::to_value(p),
            Notification::VmFailed(p) => serde_json::to_value(p),
            Notification::VmReplaced(p) => serde_json::to_value(p),
            Notification::VmBootFailed(p) => serde_json::to_value(p),
            Notification::VmDeleteStart(p) => serde_json::to_value(p),
            Notification::PoolRejected(p) => serde_json::to_value(p),
        };
        value.expect("notification payloads are plain data and serialize to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_their_field_names() {
        let failed = Notification::VmFailed(VmFailed {
            template: "shop".into(),
            vm_id: "id-1".into(),
            vm_name: "shop-web-1".into(),
            role: Some(Role::Web),
            status: VmStatus::Shutoff,
            cause: Cause::Status,
            fault: None,
        });
        assert_eq!(failed.event_type(), "autoscaler.vm.failed");
        assert_eq!(failed.priority(), Priority::Error);
        assert_eq!(
            failed.payload(),
            serde_json::json!({"template": "shop", "vm_id": "id-1", "vm_name": "shop-web-1",
                "role": "web", "status": "SHUTOFF", "cause": "status", "fault": null})
        );
        let down = Notification::Scaled(Scaled {
            direction: Direction::Down,
            template: "shop".into(),
            from: Some(3),
            to: 1,
            add: 0,
            remove: vec!["w2".into(), "w3".into()],
            metric: Some(0.8),
            reason: "r".into(),
        });
        assert_eq!(down.event_type(), "autoscaler.scale.down");
        assert_eq!(
            down.payload(),
            serde_json::json!({"template": "shop", "from": 3, "to": 1, "add": 0,
                "remove": ["w2", "w3"], "metric": 0.8, "reason": "r"})
        );
        assert!(Notification::EVENT_TYPES.contains(&down.event_type()));
    }
}
