//! The pool keeper's members: which web VMs the splitter should route to now. Members
//! are the web VMs that are up, heard from and whose server answers; before the
//! conductor has heard its VMs it keeps the members the splitter has. A VM being removed
//! drains only once another member takes requests, or when no replacement is on its way
//! (make before break).

use std::collections::BTreeSet;

use super::{address_of, Group, Tick, AJP_PORT};
use crate::{
    payload::Role,
    policy::VmPhase,
    pool::{member_name, MemberState, PoolMember},
};

impl Group {
    /// The pool the group wants now, sorted by name.
    pub(super) fn desired_pool(&self, tick: &Tick) -> Vec<PoolMember> {
        let webs = tick.live(Role::Web, &self.in_flight);
        let mut desired: Vec<PoolMember> = if tick.settled && tick.anyone_heard {
            webs.iter()
                .filter(|vm| self.joinable(vm, tick))
                .filter_map(|vm| {
                    Some(PoolMember {
                        name: member_name(&vm.name),
                        host: address_of(vm, tick.obs)?.to_string(),
                        port: AJP_PORT,
                        state: MemberState::Active,
                    })
                })
                .collect()
        } else {
            self.pool
                .members
                .iter()
                .filter(|m| webs.iter().any(|vm| member_name(&vm.name) == m.name))
                .cloned()
                .collect()
        };
        desired.sort_by(|a, b| a.name.cmp(&b.name));
        // Make before break: a VM being removed drains only once another member takes
        // requests, or when no replacement is on its way.
        let leaving: BTreeSet<String> = self.removals.keys().map(|n| member_name(n)).collect();
        let others_active = desired
            .iter()
            .filter(|m| !leaving.contains(&m.name))
            .count();
        let staying = tick
            .fleet
            .iter()
            .filter(|vm| vm.phase != VmPhase::Draining)
            .count();
        let replacement_coming = staying > others_active || self.in_flight.web_boots > 0;
        if others_active > 0 || !replacement_coming {
            for member in desired.iter_mut().filter(|m| leaving.contains(&m.name)) {
                member.state = MemberState::Draining;
            }
        }
        desired
    }
}
