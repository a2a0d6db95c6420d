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

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{elapsed, Action, Group, Phase, Tick};
use crate::{
    payload::Role,
    pool::{PoolMember, PoolUpdate},
};

/// The pool is sent again this often even when nothing changed, so a restarted splitter
/// agent (which forgot its generation) or a lost message is repaired.
pub const POOL_RESEND: Duration = Duration::from_secs(5);
/// Generations sent and not yet acknowledged that are remembered (with their active
/// members, for [`Group::serving`](super::Group)): the splitter acknowledges each within
/// a second or two, and pools change a few times a minute at most.
pub(super) const SENT_KEPT: usize = 16;
/// A pool not yet acknowledged is sent again after this long.
const POOL_RETRY: Duration = Duration::from_secs(2);

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    match group.phase {
        Phase::Starting | Phase::Ready => {
            let desired = group.desired_pool(tick);
            // Before the conductor has heard its VMs it does not know the pool: a group
            // it adopted (taken over from another conductor, or after a restart) keeps the
            // splitter's pool until someone is heard, rather than empty it.
            let known = tick.anyone_heard || group.adopted != Some(true);
            if (tick.settled && known) || group.pool.generation > 0 {
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
            pool.generation = next_generation(pool.generation.max(pool.floor), now);
            pool.members = desired;
            pool.listening = listening;
            if pool.sent.len() == SENT_KEPT {
                pool.sent.pop_front();
            }
            pool.sent
                .push_back((pool.generation, super::active_members(&pool.members)));
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

/// A generation newer than any before, also across conductor restarts and takeovers (the
/// splitter ignores older ones; a new owner starts above the database's floor): the wall
/// clock's milliseconds, or one more than the last when the clock has not moved.
fn next_generation(last: u64, now: DateTime<Utc>) -> u64 {
    let clock = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    clock.max(last + 1)
}
