//! The offline oracle: the cost floor. It knows the whole load in advance and the VM's
//! true capacity, and for each phase it has the fewest VMs that meet the target in
//! steady state, booted early enough to be up when the phase starts (it pays the same
//! boot delay: it asks a 95th-percentile boot delay, plus a tick, ahead) and removed when
//! the phase ends. It ignores load changes shorter than 5 s, as ours must.
//!
//! It does not know about crashes; a failed VM is replaced like any other.
//!
//! The fewest VMs for a level:
//! - closed loop, `N` clients, `c` threads a VM, mean service time `S`: with every
//!   thread busy, `W = N·S / (k·c)` exactly, whatever the distribution; so
//!   `k = ceil(N·S / (c·target))`;
//! - open loop, rate `λ`: the smallest `k` for which an M/G/c queue per VM (arrivals
//!   `λ/k`, round-robin split of a Poisson stream, so interarrival SCV `1/k`) has a mean
//!   response time within the target, by Erlang C with the Allen–Cunneen correction.

use chrono::{DateTime, Utc};

use super::{decision, secs, PeerSettings};
use crate::{
    policy::{Decision, Inputs, ScalingPolicy},
    sim::{
        load::{Load, LoadKind},
        world::{epoch, SimConfig},
    },
};

/// Load changes shorter than this are ignored.
const SHORTEST_CHANGE: f64 = 5.0;

#[derive(Debug, Clone)]
pub struct Oracle {
    s: PeerSettings,
    /// (start, end, VMs needed), seconds since the run began.
    plan: Vec<(f64, f64, u32)>,
    lead: f64,
    desired: Option<u32>,
}

impl Oracle {
    pub fn new(s: PeerSettings, config: &SimConfig, load: &Load) -> Oracle {
        let mut plan: Vec<(f64, f64, u32)> = Vec::new();
        for phase in &load.phases {
            let need = if phase.seconds() < SHORTEST_CHANGE {
                plan.last().map_or(s.min_vms, |p| p.2)
            } else {
                needed_vms(load.kind, phase.level, config)
            };
            plan.push((phase.start, phase.end, s.clamp(need)));
        }
        Oracle {
            s,
            plan,
            lead: config.boot.p95() + 1.0,
            desired: None,
        }
    }
}

/// The fewest VMs that answer `level` (clients, or requests a second) within the target
/// in steady state; `max_vms` when even that is not enough.
pub fn needed_vms(kind: LoadKind, level: f64, config: &SimConfig) -> u32 {
    let c = f64::from(config.threads.max(1));
    let s = config.service.mean();
    let target = config.target_response_time;
    let max = config.max_vms.max(config.min_vms).max(1);
    if level <= 0.0 {
        return config.min_vms;
    }
    match kind {
        LoadKind::Closed => {
            let k = (level * s / (c * target) - 1e-9).ceil().max(1.0);
            if k >= f64::from(max) {
                max
            } else {
                k as u32
            }
        }
        LoadKind::Open => (1..=max)
            .find(|&k| {
                let ca2 = 1.0 / f64::from(k);
                mgc_response_time(
                    level / f64::from(k),
                    config.threads.max(1),
                    s,
                    ca2,
                    config.service.scv(),
                ) <= target
            })
            .unwrap_or(max),
    }
}

/// Mean response time of a G/G/c queue with arrival rate `lambda`, `c` servers, mean
/// service `s`, squared coefficients of variation `ca2` (arrivals) and `cs2` (service):
/// Erlang C's waiting time scaled by (ca² + cs²)/2 (Allen–Cunneen). Infinite when
/// overloaded.
fn mgc_response_time(lambda: f64, c: u32, s: f64, ca2: f64, cs2: f64) -> f64 {
    let a = lambda * s;
    let rho = a / f64::from(c);
    if rho >= 1.0 {
        return f64::INFINITY;
    }
    // Erlang C by the stable recurrence on Erlang B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (f64::from(k) + a * b);
    }
    let erlang_c = b / (1.0 - rho * (1.0 - b));
    let wait = erlang_c * s / (f64::from(c) * (1.0 - rho));
    s + wait * (ca2 + cs2) / 2.0
}

impl ScalingPolicy for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let t = secs(now) - secs(epoch());
        let s = self.s;
        let current = *self.desired.get_or_insert(s.min_vms);
        let horizon = t + self.lead;
        let need = self
            .plan
            .iter()
            .filter(|&&(start, end, _)| start < horizon && end > t)
            .map(|p| p.2)
            .max()
            .unwrap_or(s.min_vms);
        let new = s.clamp(need);
        self.desired = Some(new);
        decision(
            now,
            &s,
            current,
            new,
            inputs.fleet,
            Some(f64::from(need)),
            format!(
                "the load of the next {:.0} s needs {need} VMs: {current} -> {new}",
                self.lead
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_matches_known_values() {
        // M/M/1, rho 0.5, s 1: W = s / (1 - rho) = 2.
        assert!((mgc_response_time(0.5, 1, 1.0, 1.0, 1.0) - 2.0).abs() < 1e-12);
        // M/M/2, lambda 1, s 1 (a = 1, rho 0.5): C = 1/3, W = 1 + (1/3) / (2 - 1) = 4/3.
        assert!((mgc_response_time(1.0, 2, 1.0, 1.0, 1.0) - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(mgc_response_time(2.0, 2, 1.0, 1.0, 1.0), f64::INFINITY);
    }

    #[test]
    fn the_fewest_vms_for_the_local_images() {
        let config = SimConfig::local_images(1);
        // 36 clients: W = 36 × 0.05 / (4k) <= 0.2 -> k >= 2.25 -> 3.
        assert_eq!(needed_vms(LoadKind::Closed, 36.0, &config), 3);
        assert_eq!(needed_vms(LoadKind::Closed, 4.0, &config), 1);
        assert_eq!(needed_vms(LoadKind::Closed, 0.0, &config), 1);
        assert_eq!(
            needed_vms(LoadKind::Closed, 1000.0, &config),
            4,
            "capped at max"
        );
        // 200 req/s open loop: 3 VMs (67 req/s each, rho 0.83) are within 0.2 s.
        let k = needed_vms(LoadKind::Open, 200.0, &config);
        assert_eq!(k, 3);
    }
}
