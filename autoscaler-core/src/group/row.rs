//! Stage 7, the row: one line of the group's time series a tick
//! ([`crate::timeseries::Row`]): the splitter's requests since the last tick, the web
//! VMs by phase (boots asked for this tick count as booting), and the decision.
//!
//! [`build`] is shared with the simulator, so both write the same columns the same way.

use chrono::{DateTime, Utc};

use super::{Action, Group, Phase, Tick};
use crate::{
    policy::{FleetVm, Observation, VmPhase},
    timeseries::Row,
};

/// The decision a row reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `hold`, `scale_out`, `scale_in` or `destroy`.
    pub verdict: &'static str,
    pub reason: String,
    /// The size aimed at; `None`: the VMs booting and active.
    pub desired: Option<u32>,
    pub metric: Option<f64>,
}

/// The row at `time` of `group` (its target `target`, seconds), from the observations
/// since the last row, the fleet, the web boots asked for now, and the outcome.
pub fn build(
    time: DateTime<Utc>,
    group: &str,
    target: f64,
    observations: &[Observation],
    fleet: &[FleetVm],
    boots: u32,
    outcome: Outcome,
) -> Row {
    let requests: u64 = observations.iter().map(|o| o.requests).sum();
    let interval: f64 = observations.iter().map(|o| o.interval).sum();
    let busy_time: f64 = observations
        .iter()
        .map(|o| o.requests as f64 * o.mean)
        .sum();
    let count = |phase| fleet.iter().filter(|vm| vm.phase == phase).count() as u32;
    Row {
        time,
        group: group.to_owned(),
        requests,
        rate: if interval > 0.0 {
            requests as f64 / interval
        } else {
            0.0
        },
        mean_response_time: (requests > 0).then(|| busy_time / requests as f64),
        p95_response_time: (requests > 0)
            .then(|| observations.iter().map(|o| o.p95).fold(0.0, f64::max)),
        in_flight: (interval > 0.0).then(|| busy_time / interval),
        vms_booting: count(VmPhase::Booting) + boots,
        vms_active: count(VmPhase::Active),
        vms_draining: count(VmPhase::Draining),
        desired: outcome
            .desired
            .unwrap_or_else(|| count(VmPhase::Booting) + count(VmPhase::Active)),
        target_response_time: target,
        metric: outcome.metric,
        decision: outcome.verdict.to_owned(),
        reason: outcome.reason,
    }
}

pub(super) fn run(group: &mut Group, tick: &mut Tick) {
    if group.phase != Phase::Gone {
        let outcome = match (group.phase, &tick.decision) {
            (Phase::Starting | Phase::Ready, Some(d)) => Outcome {
                verdict: d.verdict.as_str(),
                reason: d.reason.clone(),
                desired: Some(d.desired),
                metric: d.metric,
            },
            (Phase::Starting | Phase::Ready, None) => Outcome {
                verdict: "hold",
                reason:
                    "waiting for the VMs' heartbeats (grace period after the broker link came up)"
                        .to_owned(),
                desired: group.policy.desired(),
                metric: None,
            },
            (Phase::Stopping, _) => destroying("the splitter stops taking requests", group),
            (Phase::Deleting | Phase::Gone, _) => destroying("deleting every VM", group),
        };
        let row = build(
            tick.now,
            group.name(),
            group.template.target_response_time().as_secs_f64(),
            &tick.observations,
            &tick.fleet,
            tick.web_boots,
            outcome,
        );
        tick.actions.push(Action::Record(row));
    }
    if tick.decision.is_some() {
        group.last_decision = tick.decision.take();
    }
}

fn destroying(reason: &str, group: &Group) -> Outcome {
    Outcome {
        verdict: "destroy",
        reason: reason.to_owned(),
        desired: group.policy.desired(),
        metric: None,
    }
}
