//! Stage 3, the policy (fed by [`super::inputs`]): its decision carried out within the
//! template's bounds: web boots (each naming the failed VM it replaces, if any), VMs
//! chosen for removal (drained by [`super::keeper`] and [`super::drain`]), and the
//! `autoscaler.scale.*` notification. Until the conductor has heard its VMs (after a
//! restart or a broker outage) it cannot tell a booting VM from a working one: it holds,
//! rather than boot duplicates. [`Group::acts_now`] lets the conductor tick as soon as
//! the splitter's metrics complete the evidence for an action.

use chrono::{DateTime, Utc};

pub use super::inputs::{observations, policy_settings};
use super::{elapsed, Group, Tick};
use crate::{
    notification::{Direction, Notification, Scaled},
    payload::Role,
    policy::{Inputs, ScalingPolicy, Verdict},
};

/// The boots a decision may have: never beyond `max_vms`, counting every VM of the fleet
/// (booting, active and draining).
pub fn boots_within_bounds(add: u32, max_vms: u32, fleet: usize) -> u32 {
    add.min(max_vms.saturating_sub(u32::try_from(fleet).unwrap_or(u32::MAX)))
}

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    tick.fleet = group.fleet(tick);
    if !group.phase.is_live() || !tick.settled {
        return;
    }
    let now = tick.now;
    let d = group.policy.decide(
        now,
        Inputs {
            observations: &tick.observations,
            fleet: &tick.fleet,
        },
    );
    let adding = if group.backoff.allows(now) {
        boots_within_bounds(d.add, group.template.max_vms(), tick.fleet.len())
    } else {
        0
    };
    if d.add == 0 {
        // The size is met: failed VMs were already made up for (the policy stops
        // counting a VM before health declares it failed).
        group.replacing.retain(|(role, _)| *role != Role::Web);
    }
    for _ in 0..adding {
        group.boot(Role::Web, tick);
    }
    // Boots not yet answered by the cloud cannot be cancelled: only VMs that exist are
    // removed (the rest next tick, once they exist).
    let webs = tick.live(Role::Web, &group.in_flight);
    let removing: Vec<String> = d
        .remove
        .iter()
        .filter(|name| webs.iter().any(|vm| &vm.name == *name))
        .cloned()
        .collect();
    for name in &removing {
        group.removals.entry(name.clone()).or_insert(None);
    }
    if d.verdict != Verdict::Hold {
        tick.actions
            .push(super::Action::Notify(Notification::Scaled(Scaled {
                direction: if d.verdict == Verdict::ScaleOut {
                    Direction::Up
                } else {
                    Direction::Down
                },
                template: group.name().to_owned(),
                from: group.last_decision.as_ref().map(|l| l.desired),
                to: d.desired,
                add: adding,
                remove: removing,
                metric: d.metric,
                reason: d.reason.clone(),
            })));
    }
    tick.decision = Some(d);
}

impl Group {
    /// Whether the metrics that arrived since the last tick already call for a scaling
    /// action at `now` (then the conductor ticks at once: waiting would only delay the
    /// boots). A preview on a copy of the policy. False while the group is not live,
    /// before its first decision, and in the grace after the link came up.
    pub fn acts_now(&self, now: DateTime<Utc>) -> bool {
        let settled = self
            .link_up_since
            .is_some_and(|t| elapsed(now, t) >= self.settings.heartbeat_timeout);
        self.phase.is_live()
            && settled
            && self
                .policy
                .acts_now(now, &observations(&self.reports.fresh, self.serving()))
    }
}
