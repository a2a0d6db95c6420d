//! Stage 5, drains: a web VM being removed is deleted once drained: the splitter has
//! applied a pool where it drains and reports no request in flight on it, or
//! `drain_timeout` has passed. A VM not in the pool (never joined, or silent) is deleted
//! at once; a VM still serving waits until its replacement does ([`super::keeper`]).
//!
//! [`drained`] is the rule; the simulator applies it to its own VMs.

use super::{elapsed, Group, Tick};
use crate::{
    payload::Role,
    pool::{member_name, MemberState},
};

/// Whether a draining member may be deleted: the pool that drains it is applied and no
/// request is in flight on it, or the drain has taken `drain_timeout`.
pub fn drained(applied: bool, idle: bool, timed_out: bool) -> bool {
    (applied && idle) || timed_out
}

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    if !group.phase.is_live() || !(tick.settled || group.pool.generation > 0) {
        return;
    }
    let now = tick.now;
    let generation = group.pool.generation;
    let webs: Vec<_> = tick
        .live(Role::Web, &group.in_flight)
        .into_iter()
        .cloned()
        .collect();
    let mut done = Vec::new();
    for (name, drain) in group.removals.iter_mut() {
        let Some(vm) = webs.iter().find(|vm| &vm.name == name) else {
            done.push((name.clone(), None)); // already gone
            continue;
        };
        let member = member_name(name);
        let in_pool = group.pool.members.iter().find(|m| m.name == member);
        let finished = match in_pool {
            None => true,
            Some(m) if m.state != MemberState::Draining => continue,
            Some(_) => {
                let (since_generation, since) = *drain.get_or_insert((generation, now));
                drained(
                    group.pool.acked >= since_generation,
                    group.reports.busy.get(&member) == Some(&0),
                    elapsed(now, since) >= group.settings.drain_timeout,
                )
            }
        };
        if finished {
            done.push((name.clone(), Some(vm.clone())));
        }
    }
    for (name, vm) in done {
        group.removals.remove(&name);
        if let Some(vm) = vm {
            group.delete(&vm, tick);
        }
    }
}
