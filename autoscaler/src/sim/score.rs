//! The figures of one run, for the comparison table: seconds over target (all, and
//! outside the unavoidable windows), VM-seconds, scaling actions, actions caused by
//! bursts under 5 s, and the time to settle after each step up.
//!
//! Definitions (also in `doc/simulator.md`):
//! - a second is *over target* when its mean response time (the row's) is above the
//!   template's target, or when any of its requests failed (a failed request is fast,
//!   and must not pass for a good second);
//! - a *step up* is a load phase of at least 5 s that needs more VMs than the phase
//!   before it (by the oracle's count); a crash or lost heartbeat is a step up too (the
//!   same load on fewer VMs). The *unavoidable window* after one is 5 s plus the mean
//!   boot delay: no policy that ignores changes under 5 s can have a VM up sooner;
//! - a *burst* is a phase shorter than 5 s with more load than the phase before; the
//!   actions from its start to the end of the phase after it are *burst actions*;
//! - *settle*: after a step up, the seconds until the 5-row mean response time stays
//!   under the target to the end of the phase (`timeseries::settled_from`); a phase that
//!   ends over target is *unsettled*.

use super::{
    load::Load,
    peers::needed_vms,
    world::{epoch, FaultKind, RunResult, SimConfig},
};
use crate::conductor::timeseries::{settled_from, Row};

/// Load changes shorter than this are bursts.
pub const BURST_SECONDS: f64 = 5.0;

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub over_target: u32,
    pub over_avoidable: u32,
    pub vm_seconds: f64,
    pub actions: u32,
    pub burst_actions: u32,
    /// Seconds to settle after each step up; `None` for an unsettled phase.
    pub settle: Vec<Option<f64>>,
    pub requests: u64,
    pub failed: u64,
    pub bound_violations: u32,
}

impl Score {
    /// Mean of the settled steps' times, and how many steps did not settle.
    pub fn settle_summary(&self) -> (Option<f64>, usize) {
        let settled: Vec<f64> = self.settle.iter().flatten().copied().collect();
        let mean =
            (!settled.is_empty()).then(|| settled.iter().sum::<f64>() / settled.len() as f64);
        (mean, self.settle.len() - settled.len())
    }
}

/// When the interval a row covers ended, seconds since the run began (the row is taken
/// at the tick, half a second later).
fn interval_end(row: &Row) -> f64 {
    ((row.time - epoch()).num_milliseconds() as f64 / 1000.0).floor()
}

/// Start times of the step ups of `load` (faults added by [`score`]).
pub fn step_ups(load: &Load, config: &SimConfig) -> Vec<usize> {
    let mut steps = Vec::new();
    let mut previous: Option<u32> = None;
    for (i, phase) in load.phases.iter().enumerate() {
        if phase.seconds() < BURST_SECONDS {
            continue;
        }
        let need = needed_vms(load.kind, phase.level, config);
        if previous.is_some_and(|p| need > p) {
            steps.push(i);
        }
        previous = Some(need);
    }
    steps
}

pub fn score(result: &RunResult, load: &Load, config: &SimConfig) -> Score {
    let target = config.target_response_time;
    let steps = step_ups(load, config);
    let window = BURST_SECONDS + config.boot.mean();
    let mut starts: Vec<f64> = steps.iter().map(|&i| load.phases[i].start).collect();
    starts.extend(
        config
            .faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Crash | FaultKind::HeartbeatLost))
            .map(|f| f.at),
    );
    let unavoidable = |end: f64| starts.iter().any(|&s| end > s && end <= s + window);
    let over: Vec<&Row> = result
        .rows
        .iter()
        .enumerate()
        .filter(|(i, row)| {
            row.mean_response_time.is_some_and(|m| m > target)
                || result.failed_per_row.get(*i).is_some_and(|&f| f > 0)
        })
        .map(|(_, row)| row)
        .collect();
    let over_target = over.len() as u32;
    let over_avoidable = over
        .iter()
        .filter(|r| !unavoidable(interval_end(r)))
        .count() as u32;
    let is_action = |row: &Row| row.decision == "scale_out" || row.decision == "scale_in";
    let actions = result.rows.iter().filter(|r| is_action(r)).count() as u32;

    let mut burst_spans = Vec::new();
    for (i, phase) in load.phases.iter().enumerate() {
        let before = i.checked_sub(1).map(|j| load.phases[j].level);
        if phase.seconds() < BURST_SECONDS && before.is_some_and(|b| phase.level > b) {
            let until = load
                .phases
                .get(i + 1)
                .map_or(phase.end + 60.0, |next| next.end);
            burst_spans.push((phase.start, until));
        }
    }
    let burst_actions = result
        .rows
        .iter()
        .filter(|r| is_action(r))
        .filter(|r| {
            let t = interval_end(r);
            burst_spans.iter().any(|&(from, to)| t > from && t <= to)
        })
        .count() as u32;

    let settle = steps
        .iter()
        .map(|&i| {
            let phase = &load.phases[i];
            let rows: Vec<&Row> = result
                .rows
                .iter()
                .filter(|r| {
                    let t = interval_end(r);
                    t > phase.start && t <= phase.end
                })
                .collect();
            settled_from(&rows, target).map(|k| k as f64)
        })
        .collect();
    Score {
        over_target,
        over_avoidable,
        vm_seconds: result.vm_seconds,
        actions,
        burst_actions,
        settle,
        requests: result.phases.iter().map(|p| p.complete + p.failed).sum(),
        failed: result.phases.iter().map(|p| p.failed).sum(),
        bound_violations: result.bound_violations,
    }
}
