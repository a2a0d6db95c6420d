//! The policies ours is compared with, each from its public documentation with its
//! defaults (the source of each default is named beside it), and the offline oracle.
//!
//! They live in `sim/` rather than `policy/` because the conductor never runs them and
//! some need what only the simulator knows: the oracle the future, AutoScale the packing
//! factor its authors measure offline. `policy/` stays the code the live conductor runs.
//!
//! Every peer implements the same [`ScalingPolicy`] trait, sees the same per-second
//! observations and the same fleet, and turns its size into boots and removals through
//! the same [`carry_out`] as ours, so only the decision differs. Every peer tracks the
//! same metric as ours, the site's mean response time, against the template's target:
//! that is what the operator asks for (HPA, target tracking and Aodh take any metric;
//! a CPU threshold would answer another question).

mod autoscale;
mod heat_aodh;
mod hpa;
mod oracle;
mod target_tracking;

pub use autoscale::AutoScale;
pub use heat_aodh::HeatAodh;
pub use hpa::Hpa;
pub use oracle::{needed_vms, Oracle};
pub use target_tracking::TargetTracking;

use std::{collections::VecDeque, fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};

use super::{load::Load, world::SimConfig};
use crate::conductor::group::sizing::policy_settings;
use crate::policy::{
    carry_out, Decision, FleetVm, LittlePolicy, Observation, PolicySettings, ScalingPolicy,
    Verdict, VmPhase,
};

/// What every policy is given: the template's bounds and target, `boot_timeout`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerSettings {
    pub min_vms: u32,
    pub max_vms: u32,
    pub target_response_time: f64,
    pub boot_timeout: Duration,
}

impl PeerSettings {
    pub fn of(config: &SimConfig) -> PeerSettings {
        let defaults = crate::conf::Config::default();
        PeerSettings {
            min_vms: config.min_vms,
            max_vms: config.max_vms.max(config.min_vms),
            target_response_time: config.target_response_time,
            boot_timeout: defaults.conductor.boot_timeout,
        }
    }

    fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min_vms, self.max_vms)
    }
}

/// The policies of the comparison, ours first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `LittlePolicy` with the conductor's defaults: the product.
    Autoscaler,
    Hpa,
    TargetTracking,
    HeatAodh,
    AutoScale,
    Oracle,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Autoscaler,
        PolicyKind::Hpa,
        PolicyKind::TargetTracking,
        PolicyKind::HeatAodh,
        PolicyKind::AutoScale,
        PolicyKind::Oracle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Autoscaler => "autoscaler",
            PolicyKind::Hpa => "k8s-hpa",
            PolicyKind::TargetTracking => "aws-target-tracking",
            PolicyKind::HeatAodh => "heat-aodh",
            PolicyKind::AutoScale => "autoscale",
            PolicyKind::Oracle => "oracle",
        }
    }

    /// The policy, for a run of `load` on `config`'s site.
    pub fn build(self, config: &SimConfig, load: &Load) -> Box<dyn ScalingPolicy> {
        let s = PeerSettings::of(config);
        match self {
            PolicyKind::Autoscaler => Box::new(LittlePolicy::new(product_settings(config))),
            PolicyKind::Hpa => Box::new(Hpa::new(s)),
            PolicyKind::TargetTracking => Box::new(TargetTracking::new(s)),
            PolicyKind::HeatAodh => Box::new(HeatAodh::new(s)),
            PolicyKind::AutoScale => Box::new(AutoScale::new(
                s,
                config.per_vm_rate() * config.target_response_time,
            )),
            PolicyKind::Oracle => Box::new(Oracle::new(s, config, load)),
        }
    }
}

/// `LittlePolicy`'s settings as the conductor makes them with the default `[policy]` and
/// `[conductor]` options: the group's own [`policy_settings`].
pub fn product_settings(config: &SimConfig) -> PolicySettings {
    let settings = config.group_settings();
    policy_settings(
        config.min_vms,
        config.max_vms,
        config.target_response_time,
        &settings,
    )
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown policy {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// Seconds of an instant (for windows: only differences matter).
fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn active(fleet: &[FleetVm]) -> u32 {
    fleet
        .iter()
        .filter(|vm| vm.phase == VmPhase::Active)
        .count() as u32
}

/// The decision for a size, carried out as ours is.
fn decision(
    now: DateTime<Utc>,
    s: &PeerSettings,
    before: u32,
    desired: u32,
    fleet: &[FleetVm],
    metric: Option<f64>,
    reason: String,
) -> Decision {
    let (add, remove) = carry_out(now, desired, s.max_vms, s.boot_timeout, fleet);
    Decision {
        desired,
        add,
        remove,
        metric,
        verdict: verdict(before, desired),
        reason,
    }
}

/// A tick that keeps `size` (replacements may still be booted to reach it).
fn hold(
    now: DateTime<Utc>,
    s: &PeerSettings,
    size: u32,
    fleet: &[FleetVm],
    metric: Option<f64>,
    reason: String,
) -> Decision {
    decision(now, s, size, size, fleet, metric, reason)
}

fn verdict(before: u32, after: u32) -> Verdict {
    match after.cmp(&before) {
        std::cmp::Ordering::Greater => Verdict::ScaleOut,
        std::cmp::Ordering::Less => Verdict::ScaleIn,
        std::cmp::Ordering::Equal => Verdict::Hold,
    }
}

/// Recent observations (a quarter of a second each from the agent), for metrics averaged
/// over a period (what a metrics pipeline with that resolution would report).
#[derive(Debug, Default, Clone)]
struct Recent {
    /// (end, requests, mean, interval), oldest first.
    seconds: VecDeque<(f64, u64, f64, f64)>,
    last_end: Option<f64>,
}

impl Recent {
    /// Keeps new observations, and those of the last `keep` seconds.
    fn take(&mut self, observations: &[Observation], now: f64, keep: f64) {
        for obs in observations {
            let end = secs(obs.end);
            if self.last_end.is_some_and(|last| end <= last) || !obs.mean.is_finite() {
                continue;
            }
            self.last_end = Some(end);
            self.seconds
                .push_back((end, obs.requests, obs.mean, obs.interval));
        }
        while self
            .seconds
            .front()
            .is_some_and(|&(end, ..)| end <= now - keep)
        {
            self.seconds.pop_front();
        }
    }

    /// Request-weighted mean response time of the seconds ending in `(from, to]`;
    /// `None` without requests.
    fn mean(&self, from: f64, to: f64) -> Option<f64> {
        let (mut requests, mut total) = (0u64, 0.0);
        for &(end, n, mean, _) in &self.seconds {
            if end > from && end <= to {
                requests += n;
                total += n as f64 * mean;
            }
        }
        (requests > 0).then(|| total / requests as f64)
    }

    /// The newest observation's requests in flight (Little's law).
    fn newest_in_flight(&self) -> Option<f64> {
        self.seconds
            .back()
            .filter(|&&(.., interval)| interval > 0.0)
            .map(|&(_, n, mean, interval)| n as f64 * mean / interval)
    }
}

#[cfg(test)]
mod tests;
