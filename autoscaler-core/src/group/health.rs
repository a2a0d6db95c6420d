//! Stage 1, health: which VMs have failed. Failed are VMs the cloud reports dead
//! (`ERROR`, `SHUTOFF`); `ACTIVE` VMs gone silent; VMs not up and heard from within
//! `boot_timeout`; web VMs whose server has not answered their agent for
//! `heartbeat_timeout` once past `boot_timeout`. Each is reported once, leaves the pool,
//! is deleted, and is queued for replacement (the policy's size has it made up for).
//!
//! Silence is evidence only while the conductor hears others *now*: when it goes deaf (a
//! broker cut it has not noticed yet), every VM falls silent together, but their last
//! heartbeats differ by up to an interval, so "others heard within heartbeat_timeout"
//! would fail the stalest while the others are still fresh. And only after the grace
//! period since the link came up: heartbeats may not have arrived yet.
//!
//! [`judge`] is the rule for one VM; the simulator applies it to its own VMs.

use std::time::Duration;

use super::{elapsed, within, Action, Group, GroupSettings, Tick};
use crate::{
    cloud::{Vm, VmStatus},
    notification::{Cause, Notification, VmFailed},
};

/// What [`judge`] looks at for one VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmFacts {
    pub status: VmStatus,
    /// Since the VM was created.
    pub age: Duration,
    /// Whether the conductor ever heard it (since it started).
    pub heard_before: bool,
    /// Heard within `heartbeat_timeout`.
    pub fresh: bool,
    /// How long its agent has said its server does not answer.
    pub unserving_for: Option<Duration>,
}

/// Whether the conductor can judge silence now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hearing {
    /// Past the grace period after the broker link came up.
    pub settled: bool,
    /// Some VM of the group heard within the hearing window.
    pub anyone_heard: bool,
}

/// Why `vm` has failed, or `None` when it has not.
pub fn judge(vm: &VmFacts, hearing: Hearing, settings: &GroupSettings) -> Option<Cause> {
    let Hearing {
        settled,
        anyone_heard,
    } = hearing;
    let past_boot = settled && vm.age >= settings.boot_timeout;
    if matches!(vm.status, VmStatus::Error | VmStatus::Shutoff) {
        Some(Cause::Status)
    } else if vm.status == VmStatus::Active
        && settled
        && anyone_heard
        && vm.heard_before
        && !vm.fresh
    {
        // Only a VM that has spoken before is silent (a VM booting is not).
        Some(Cause::HeartbeatLost)
    } else if past_boot && (vm.status == VmStatus::Build || (!vm.heard_before && anyone_heard)) {
        // Never heard since this conductor started: only evidence while others are
        // heard (after a broker restart, agents may take a while to return).
        Some(Cause::BootTimeout)
    } else if past_boot
        && vm
            .unserving_for
            .is_some_and(|t| t > settings.heartbeat_timeout)
    {
        Some(Cause::NotServing)
    } else {
        None
    }
}

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    let (now, obs) = (tick.now, tick.obs);
    group
        .unserving_since
        .retain(|name, _| obs.heartbeats.get(name).and_then(|h| h.serving) == Some(false));
    for (name, hb) in &obs.heartbeats {
        if hb.serving == Some(false) {
            group.unserving_since.entry(name.clone()).or_insert(now);
        }
    }
    let hearing = Hearing {
        settled: tick.settled,
        anyone_heard: tick.anyone_heard,
    };
    for vm in &obs.vms {
        if group.in_flight.deletes.contains(&vm.id) {
            continue;
        }
        let Some(cause) = judge(&group.facts(vm, tick), hearing, &group.settings) else {
            continue;
        };
        tick.failed.insert(vm.id.clone());
        if group.reported.insert(vm.id.clone()) {
            group.report(vm, cause, tick);
        }
        if !matches!(group.phase, super::Phase::Deleting | super::Phase::Gone) {
            group.delete(vm, tick);
        }
    }
}

impl Group {
    fn facts(&self, vm: &Vm, tick: &Tick) -> VmFacts {
        let (now, obs) = (tick.now, tick.obs);
        let heartbeat = obs.heartbeats.get(&vm.name);
        VmFacts {
            status: vm.status,
            age: elapsed(now, vm.created_at),
            heard_before: heartbeat.is_some(),
            fresh: heartbeat
                .is_some_and(|hb| within(now, hb.last, self.settings.heartbeat_timeout)),
            unserving_for: self.unserving_since.get(&vm.name).map(|t| elapsed(now, *t)),
        }
    }

    /// Reports a VM found failed, once: the notification, the backoff when it failed
    /// before it was ever heard, and its replacement.
    fn report(&mut self, vm: &Vm, cause: Cause, tick: &mut Tick) {
        let heard_before = tick.obs.heartbeats.contains_key(&vm.name);
        if !heard_before {
            self.backoff.failed(tick.now);
        }
        tick.actions
            .push(Action::Notify(Notification::VmFailed(VmFailed {
                template: self.name().to_owned(),
                vm_id: vm.id.0.clone(),
                vm_name: vm.name.clone(),
                role: vm.role(),
                status: vm.status,
                cause,
                fault: vm.fault.clone(),
            })));
        if let Some(role) = vm.role() {
            if self.phase.is_live() && !self.removals.contains_key(&vm.name) {
                self.replacing.push((role, vm.name.clone()));
            }
        }
    }

    /// Asks the cloud to delete `vm` (once: a delete in flight is not asked again).
    pub(super) fn delete(&mut self, vm: &Vm, tick: &mut Tick) {
        self.in_flight.deletes.insert(vm.id.clone());
        tick.actions.push(Action::Delete(vm.id.clone()));
    }
}
