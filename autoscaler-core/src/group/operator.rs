//! What the operator asks of a group: its destruction and the removal of one web VM.

use chrono::{DateTime, Utc};

use super::{Group, Phase, VmState};
use crate::payload::Role;

/// Why a VM cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("no VM named {vm:?} in template {template:?}")]
    NotFound { vm: String, template: String },
    #[error("{vm:?} is the splitter; it goes with the template: autoscaler-manage template destroy {template}")]
    Splitter { vm: String, template: String },
    #[error("template {template:?} is being destroyed")]
    Destroying { template: String },
}

impl Group {
    /// Starts the tear-down (idempotent).
    pub fn destroy(&mut self) {
        if self.phase.is_live() {
            self.phase = Phase::Stopping;
        }
    }

    /// Asks for web VM `name` to be removed: drained (no new requests; those in flight
    /// finish), then deleted; the policy boots a replacement meanwhile (the size does not
    /// change).
    pub fn remove_vm(&mut self, name: &str, now: DateTime<Utc>) -> Result<VmState, RemoveError> {
        let template = self.name().to_owned();
        let vm = self
            .view(now)
            .vms
            .into_iter()
            .find(|vm| vm.name == name)
            .ok_or_else(|| RemoveError::NotFound {
                vm: name.to_owned(),
                template: template.clone(),
            })?;
        if vm.role != Some(Role::Web) {
            return Err(RemoveError::Splitter {
                vm: name.to_owned(),
                template,
            });
        }
        if !self.phase.is_live() {
            return Err(RemoveError::Destroying { template });
        }
        self.removals.entry(name.to_owned()).or_insert(None);
        Ok(vm)
    }
}
