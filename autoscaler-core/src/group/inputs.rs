//! The policy's inputs, for stage 3 ([`super::sizing`]): its knobs from the template and
//! `[policy]`, and the splitter's metrics as its observations (the web VMs as it counts
//! them are [`super::fleet`]). Both are shared with the simulator.

use super::GroupSettings;
use crate::{
    payload::Metrics,
    policy::{Observation, PolicySettings},
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
