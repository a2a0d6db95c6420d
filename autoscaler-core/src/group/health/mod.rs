//! Stage 1, health: which VMs have failed. Failed are VMs the cloud reports dead
//! (`ERROR`, `SHUTOFF`); `ACTIVE` VMs gone silent; VMs not up and heard from within
//! `boot_timeout`; web VMs whose server has stopped answering their agent (for
//! `not_serving_timeout` when it answered before, for `heartbeat_timeout` past
//! `boot_timeout` when it never did). Each is reported once, leaves the pool, is deleted,
//! and is queued for replacement (the policy's size has it made up for).
//!
//! Silence is evidence only while the conductor hears others *now*: when it goes deaf (a
//! broker cut it has not noticed yet), every VM falls silent together, but their last
//! heartbeats differ by up to an interval, so "others heard within heartbeat_timeout"
//! would fail the stalest while the others are still fresh. And only after the grace
//! period since the link came up: heartbeats may not have arrived yet.
//!
//! [`judge`] (in `judge.rs`) is the rule for one VM; the simulator applies it to its own
//! VMs. `serving.rs` keeps what agents said of their servers; this file gathers the
//! facts and carries the verdicts out.

mod judge;
mod serving;

pub use judge::{judge, Hearing, VmFacts};

use super::{elapsed, within, Action, Group, Tick};
use crate::{
    cloud::Vm,
    notification::{Cause, Notification, VmFailed},
};

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    let (now, obs) = (tick.now, tick.obs);
    serving::note(group, now, obs);
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
            served_before: self.served.contains(&vm.name),
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
