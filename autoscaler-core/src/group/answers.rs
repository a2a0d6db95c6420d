//! The cloud's answers to the group's boots and deletes.

use chrono::{DateTime, Utc};

use super::{Action, BootOutcome, Group};
use crate::{
    cloud::VmId,
    notification::{Notification, VmBootFailed, VmReplaced},
    payload::Role,
};

impl Group {
    /// The cloud answered a boot. A refusal feeds the backoff, and the failed VM it was
    /// to replace waits for the next boot of its role.
    pub fn booted(&mut self, now: DateTime<Utc>, outcome: BootOutcome) -> Vec<Action> {
        let pending = match outcome.role {
            Role::Web => &mut self.in_flight.web_boots,
            Role::Splitter => &mut self.in_flight.splitter_boots,
        };
        *pending = pending.saturating_sub(1);
        let template = self.name().to_owned();
        let notification = match outcome.result {
            Ok(id) => {
                let failed_vm_name = outcome.replaces.clone().unwrap_or_default();
                outcome.replaces.map(|_| {
                    Notification::VmReplaced(VmReplaced {
                        template,
                        role: outcome.role,
                        failed_vm_name,
                        vm_name: outcome.name,
                        vm_id: id.0,
                    })
                })
            }
            Err(refusal) => {
                self.backoff.failed(now);
                if let Some(failed) = outcome.replaces {
                    self.replacing.insert(0, (outcome.role, failed));
                }
                Some(Notification::VmBootFailed(VmBootFailed {
                    template,
                    vm_name: outcome.name,
                    role: outcome.role,
                    error: refusal.error,
                    retryable: refusal.retryable,
                }))
            }
        };
        notification.map(Action::Notify).into_iter().collect()
    }

    /// The cloud answered a delete; returns the VM's name when it is gone (its
    /// heartbeats are history now).
    pub fn deleted(&mut self, id: &VmId, gone: bool) -> Option<&str> {
        self.in_flight.deletes.remove(id);
        gone.then(|| self.vm_name(id)).flatten()
    }
}
