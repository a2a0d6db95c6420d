//! Stage 4, the pool keeper: which web VMs the splitter routes to, and when to send it
//! the pool. Members are the web VMs that are up, heard from and whose server answers;
//! a VM being removed drains (make before break: only once another member takes
//! requests, or when no replacement is on its way). The pool is sent when it changes,
//! again every few seconds until the splitter acknowledges it, to a splitter heard for
//! the first time at once, and every [`POOL_RESEND`] as a repair. While stopping, the
//! same members with `listening: false`.
//!
//! A conductor that has not heard its VMs yet (a restart, a reconnect) or hears nobody
//! now (deaf before its link notices) keeps the members the splitter has rather than
//! empty its pool: only VMs the cloud shows dead or gone leave; and before it has heard
//! them at all it sends no pool.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};

use super::{address_of, elapsed, Action, Group, Phase, Tick, AJP_PORT};
use crate::{
    payload::Role,
    policy::VmPhase,
    pool::{member_name, MemberState, PoolMember, PoolUpdate},
};

/// The pool is sent again this often even when nothing changed, so a restarted splitter
/// agent (which forgot its generation) or a lost message is repaired.
pub const POOL_RESEND: Duration = Duration::from_secs(5);
/// A pool not yet acknowledged is sent again after this long.
const POOL_RETRY: Duration = Duration::from_secs(2);

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    match group.phase {
        Phase::Starting | Phase::Ready => {
            let desired = group.desired_pool(tick);
            // Before the conductor has heard its VMs it does not know the pool.
            if tick.settled || group.pool.generation > 0 {
                let splitter = tick
                    .live(Role::Splitter, &group.in_flight)
                    .into_iter()
                    .find(|vm| group.heartbeat_fresh(vm, tick.obs, tick.now))
                    .map(|vm| vm.name.clone());
                group.publish_if_due(desired, true, splitter, tick);
            }
        }
        Phase::Stopping => {
            let members = group.pool.members.clone();
            let splitter = group.pool.splitter.clone();
            group.publish_if_due(members, false, splitter, tick);
        }
        Phase::Deleting | Phase::Gone => {}
    }
}

impl Group {
    /// The pool the group wants now, sorted by name.
    fn desired_pool(&self, tick: &Tick) -> Vec<PoolMember> {
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

    /// Sends the pool when it changed, when the splitter has not acknowledged it yet
    /// (every few seconds), to a new splitter, or as the periodic repair.
    fn publish_if_due(
        &mut self,
        desired: Vec<PoolMember>,
        listening: bool,
        splitter: Option<String>,
        tick: &mut Tick,
    ) {
        let now = tick.now;
        let pool = &mut self.pool;
        let changed =
            desired != pool.members || listening != pool.listening || pool.generation == 0;
        // A splitter heard for the first time (a replacement, or its agent restarted
        // under a new name) gets the pool now, not at the next periodic resend.
        let new_splitter = splitter.is_some() && splitter != pool.splitter;
        if splitter.is_some() {
            pool.splitter = splitter;
        }
        if changed {
            pool.generation = next_generation(pool.generation, now);
            pool.members = desired;
            pool.listening = listening;
        }
        let since_last = pool.last_publish.map(|t| elapsed(now, t));
        let unacked = pool.acked < pool.generation;
        let due = changed
            || new_splitter
            || since_last.is_none_or(|s| s >= POOL_RESEND)
            || (unacked && since_last.is_none_or(|s| s >= POOL_RETRY));
        if due {
            pool.last_publish = Some(now);
            tick.actions.push(Action::PublishPool(PoolUpdate {
                group: self.template.name().to_owned(),
                generation: pool.generation,
                members: pool.members.clone(),
                listening: pool.listening,
            }));
        }
    }
}

/// A generation newer than any before, also across conductor restarts (the splitter
/// ignores older generations and the conductor keeps none on disk): milliseconds of the
/// wall clock, or one more than the last when the clock has not moved.
fn next_generation(last: u64, now: DateTime<Utc>) -> u64 {
    let clock = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    clock.max(last + 1)
}
