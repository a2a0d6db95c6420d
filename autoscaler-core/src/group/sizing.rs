//! Stage 3, the policy: the web VMs as the policy counts them (the fleet), the splitter's
//! metrics as its observations, its decision, and the decision carried out within the
//! template's bounds: web boots (each naming the failed VM it replaces, if any), VMs
//! chosen for removal (drained by [`super::keeper`] and [`super::drain`]), and the
//! `autoscaler.scale.*` notification. Until the conductor has heard its VMs (after a
//! restart or a broker outage) it cannot tell a booting VM from a working one: it holds,
//! rather than boot duplicates.
//!
//! [`policy_settings`], [`observations`] and [`boots_within_bounds`] are shared with the
//! simulator.

use chrono::{DateTime, Utc};

use super::{Group, GroupSettings, Tick};
use crate::{
    cloud::Vm,
    notification::{Direction, Notification, Scaled},
    payload::{Metrics, Role},
    policy::{FleetVm, Inputs, Observation, PolicySettings, ScalingPolicy, Verdict, VmPhase},
    pool::{member_name, MemberState},
};

/// The policy's knobs for a template's bounds and target under `settings`.
pub fn policy_settings(
    min_vms: u32,
    max_vms: u32,
    target_response_time: f64,
    settings: &GroupSettings,
) -> PolicySettings {
    PolicySettings {
        min_vms,
        max_vms,
        target_response_time,
        target_margin: f64::from(settings.policy.target_margin_percent) / 100.0,
        stabilization: settings.policy.stabilization,
        scale_in_delay: settings.policy.scale_in_delay,
        scale_in_cooldown: settings.policy.scale_in_cooldown,
        boot_timeout: settings.boot_timeout,
    }
}

/// The boots a decision may have: never beyond `max_vms`, counting every VM of the fleet
/// (booting, active and draining).
pub fn boots_within_bounds(add: u32, max_vms: u32, fleet: usize) -> u32 {
    add.min(max_vms.saturating_sub(u32::try_from(fleet).unwrap_or(u32::MAX)))
}

/// The splitter's metrics as the policy reads them, oldest first; `serving` is the
/// members taking requests. Metrics whose interval or times make no sense are left out.
pub fn observations(metrics: &[Metrics], serving: u32) -> Vec<Observation> {
    let mut observations: Vec<Observation> = metrics
        .iter()
        .filter(|m| m.interval.is_finite() && m.interval >= 0.0 && m.interval < 3600.0)
        .filter_map(|m| {
            let interval = chrono::TimeDelta::milliseconds((m.interval * 1000.0) as i64);
            Some(Observation {
                end: m.start.checked_add_signed(interval)?,
                interval: m.interval,
                requests: m.site.requests,
                mean: m.site.mean,
                p95: m.site.p95,
                serving,
            })
        })
        .collect();
    observations.sort_by_key(|o| o.end);
    observations
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
    /// Whether web VM `vm` may take requests: up, heard from, and its server answers.
    pub(super) fn joinable(&self, vm: &Vm, tick: &Tick) -> bool {
        vm.status == crate::cloud::VmStatus::Active
            && self.heartbeat_fresh(vm, tick.obs, tick.now)
            && tick.obs.heartbeats.get(&vm.name).and_then(|h| h.serving) != Some(false)
    }

    /// The web VMs as the policy counts them: draining when being removed, active when
    /// they take (or may now take) requests, else booting; boots not yet answered by the
    /// cloud are booting too.
    fn fleet(&self, tick: &Tick) -> Vec<FleetVm> {
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
