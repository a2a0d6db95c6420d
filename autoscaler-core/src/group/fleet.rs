//! The web VMs as the policy counts them, for stage 3 ([`super::sizing`]): draining when
//! being removed, active when they take (or may now take) requests, else booting; boots
//! not yet answered by the cloud are booting too.

use chrono::{DateTime, Utc};

use super::{Group, Tick};
use crate::{
    cloud::{Vm, VmStatus},
    payload::Role,
    policy::{FleetVm, VmPhase},
    pool::{member_name, MemberState},
};

impl Group {
    /// Whether web VM `vm`, whose agent has just said its server answers, may join the
    /// splitter's pool at a tick now: booting or up in the cloud's last listing (the
    /// tick lists the cloud again), not in the pool yet and not being removed. The
    /// conductor then ticks at once: a VM ready to serve waits for no tick
    /// (doc/policy.md, "Reaction and settle").
    pub fn joins_now(&self, vm: &str) -> bool {
        let member = member_name(vm);
        self.phase.is_live()
            && self.last_seen.vms.iter().any(|v| {
                v.name == vm
                    && v.role() == Some(Role::Web)
                    && matches!(v.status, VmStatus::Build | VmStatus::Active)
            })
            && !self.pool.members.iter().any(|m| m.name == member)
            && !self.removals.contains_key(vm)
    }

    /// Whether web VM `vm` may take requests: up, heard from, and its server answers.
    pub(super) fn joinable(&self, vm: &Vm, tick: &Tick) -> bool {
        vm.status == crate::cloud::VmStatus::Active
            && self.heartbeat_fresh(vm, tick.obs, tick.now)
            && tick.obs.heartbeats.get(&vm.name).and_then(|h| h.serving) != Some(false)
    }

    /// The web VMs as the policy counts them: draining when being removed, active when
    /// they take (or may now take) requests, else booting; boots not yet answered by the
    /// cloud are booting too.
    pub(super) fn fleet(&self, tick: &Tick) -> Vec<FleetVm> {
        let webs = tick.live(Role::Web, &self.in_flight);
        let mut fleet: Vec<FleetVm> = webs
            .iter()
            .map(|vm| {
                let member = member_name(&vm.name);
                let phase = if self.removals.contains_key(&vm.name) {
                    VmPhase::Draining
                } else if self.joinable(vm, tick)
                    || self
                        .pool
                        .members
                        .iter()
                        .any(|m| m.name == member && m.state == MemberState::Active)
                {
                    VmPhase::Active
                } else {
                    VmPhase::Booting
                };
                FleetVm {
                    name: vm.name.clone(),
                    phase,
                    created_at: vm.created_at,
                    busy: self.reports.busy.get(&member).copied(),
                }
            })
            .collect();
        fleet.extend((0..self.in_flight.web_boots).map(|i| requested(i, tick.now)));
        fleet
    }
}

/// A boot asked for and not yet answered by the cloud.
fn requested(i: usize, now: DateTime<Utc>) -> FleetVm {
    FleetVm {
        name: format!("(boot {i} requested)"),
        phase: VmPhase::Booting,
        created_at: now,
        busy: None,
    }
}
