//! Stage 2, replacements: the backoff on boots ends once a VM booted after the last
//! failure is heard (the image works); a group without a live splitter boots one, naming
//! the failed splitter it replaces. Web VMs are replaced through the policy's size
//! ([`super::sizing`]); this stage only says which failed VM a boot replaces.

use super::{Action, Group, Tick};
use crate::payload::Role;

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    if !group.phase.is_live() {
        return;
    }
    let (now, obs) = (tick.now, tick.obs);
    if group.backoff.last_failure().is_some_and(|t| {
        obs.vms
            .iter()
            .any(|vm| vm.created_at > t && group.heartbeat_fresh(vm, obs, now))
    }) {
        group.backoff.reset();
    }
    let splitters = tick.live(Role::Splitter, &group.in_flight).len();
    if splitters > 0 {
        group.replacing.retain(|(role, _)| *role != Role::Splitter);
    } else if group.in_flight.splitter_boots == 0 && group.backoff.allows(now) {
        group.boot(Role::Splitter, tick);
    }
}

impl Group {
    /// Asks the cloud for a VM of `role`, replacing the oldest failed VM of that role
    /// still waiting for one.
    pub(super) fn boot(&mut self, role: Role, tick: &mut Tick) {
        let replaces = self
            .replacing
            .iter()
            .position(|(r, _)| *r == role)
            .map(|i| self.replacing.remove(i).1);
        match role {
            Role::Web => {
                self.in_flight.web_boots += 1;
                tick.web_boots += 1;
            }
            Role::Splitter => self.in_flight.splitter_boots += 1,
        }
        tick.actions.push(Action::Boot { role, replaces });
    }
}
