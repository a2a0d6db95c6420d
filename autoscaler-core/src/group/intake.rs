//! What reaches a group between ticks, and what the operator asks of it: the splitter's
//! metrics and pool acknowledgements, the cloud's answers to boots and deletes, destroy
//! and the removal of one VM; and the group as `template show` reports it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{Action, BootOutcome, Group, GroupView, Phase, VmState};
use crate::{
    cloud::VmId,
    notification::{Notification, PoolRejected, VmBootFailed, VmReplaced},
    payload::{Metrics, Role},
    pool::{member_name, PoolAck, PoolOutcome},
};

/// Metrics kept between two ticks; more means the loop is far behind, and the oldest are
/// worthless by then.
const FRESH_METRICS_MAX: usize = 30;

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
    /// The splitter's per-second metrics: the busy counts the drains read, and the
    /// observations for the policy's next tick.
    pub fn metrics(&mut self, metrics: Metrics) {
        self.reports.busy = metrics
            .members
            .iter()
            .filter_map(|m| Some((m.member.clone(), m.busy?)))
            .collect();
        if self.reports.fresh.len() >= FRESH_METRICS_MAX {
            self.reports.fresh.remove(0);
        }
        self.reports.fresh.push(metrics.clone());
        self.reports.last = Some(metrics);
    }

    /// Until when boots are held back after failures, if they are.
    pub fn boots_held_until(&self) -> Option<DateTime<Utc>> {
        self.backoff.held_until()
    }

    /// The splitter's last metrics.
    pub fn last_metrics(&self) -> Option<&Metrics> {
        self.reports.last.as_ref()
    }

    /// The splitter's answer to a pool update.
    pub fn pool_ack(&mut self, ack: &PoolAck) -> Vec<Action> {
        match &ack.outcome {
            PoolOutcome::Applied => {
                self.pool.acked = self.pool.acked.max(ack.generation);
                Vec::new()
            }
            PoolOutcome::Rejected { reason } => {
                vec![Action::Notify(Notification::PoolRejected(PoolRejected {
                    template: self.name().to_owned(),
                    splitter: ack.vm_id.clone(),
                    generation: ack.generation,
                    reason: reason.clone(),
                }))]
            }
        }
    }

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

    /// Whether the group has stepped once (seen the cloud's listing of its VMs).
    pub fn has_listed(&self) -> bool {
        self.last_now.is_some()
    }

    /// An earlier owner of the group last sent pool `generation`: every pool this group
    /// sends from now on is newer (the splitter ignores older ones).
    pub fn resume_pool_after(&mut self, generation: u64) {
        self.pool.floor = self.pool.floor.max(generation);
    }

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

    /// The name of VM `id`, as the cloud last showed it.
    pub fn vm_name(&self, id: &VmId) -> Option<&str> {
        self.last_seen
            .vms
            .iter()
            .find(|vm| &vm.id == id)
            .map(|vm| vm.name.as_str())
    }

    /// The group as `template show` reports it, from the last observation.
    pub fn view(&self, now: DateTime<Utc>) -> GroupView {
        let obs = &self.last_seen;
        let in_pool: BTreeSet<&str> = self.pool.members.iter().map(|m| m.name.as_str()).collect();
        let vms = obs
            .vms
            .iter()
            .map(|vm| {
                let member = member_name(&vm.name);
                VmState {
                    id: vm.id.0.clone(),
                    name: vm.name.clone(),
                    role: vm.role(),
                    status: vm.status,
                    address: super::address_of(vm, obs).map(|a| a.to_string()),
                    heartbeat_age: obs
                        .heartbeats
                        .get(&vm.name)
                        .map(|h| (now - h.last).num_milliseconds().max(0) as f64 / 1000.0),
                    in_pool: in_pool.contains(member.as_str()),
                    busy: self.reports.busy.get(&member).copied(),
                }
            })
            .collect();
        GroupView {
            phase: self.phase,
            url: super::url(obs),
            pool_generation: self.pool.generation,
            acked_generation: self.pool.acked,
            vms,
        }
    }
}
