//! Scaling policies: how many web VMs a site should have, decided once a tick from the
//! splitter's per-second observations and the VMs the group has.
//!
//! Pure: no I/O, no sleeping, no clock of its own (the time is an argument), so the
//! conductor and the simulator run the very same code, and every rule is tested with
//! plain values. [`ScalingPolicy`] is the contract; [`LittlePolicy`] is the product's
//! policy (Little's law sizing, see `doc/policy.md`); other policies (the peers the
//! simulator compares against) implement the same trait.
//!
//! Units: times are seconds as `f64` (as on the wire), instants are `DateTime<Utc>`.

mod capacity;
mod little;
#[cfg(test)]
mod tests;
mod window;

pub use capacity::CapacityModel;
pub use little::{LittlePolicy, PolicySettings};

/// `[policy]`: the operator's knobs, the same for every group (the bounds and the target
/// come from each template; `doc/policy.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyOpts {
    /// The policy aims this many percent under the template's target.
    pub target_margin_percent: u32,
    /// Load changes shorter than this never add or remove VMs.
    pub stabilization: Duration,
    /// How long the load must need fewer VMs before any is removed.
    pub scale_in_delay: Duration,
    /// No VM is removed within this long after a scale-out.
    pub scale_in_cooldown: Duration,
}

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the splitter measured over one interval (normally one second), with the number of
/// pool members that were taking requests when it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When the interval ended.
    pub end: DateTime<Utc>,
    /// Length of the interval, seconds (about 1).
    pub interval: f64,
    /// Requests that ended in the interval.
    pub requests: u64,
    /// Their mean response time, seconds (0 when there were none).
    pub mean: f64,
    /// Their 95th percentile, seconds.
    pub p95: f64,
    /// Pool members in the active state (not draining) when the interval was measured.
    pub serving: u32,
}

impl Observation {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        if self.interval > 0.0 {
            self.requests as f64 / self.interval
        } else {
            0.0
        }
    }

    /// Mean number of requests in the site during the interval, by Little's law
    /// (L = λ·W): the sum of the response times of the interval's requests over its
    /// length. Under closed-loop load (ab's `-c N`) this is the number of clients.
    pub fn in_flight(&self) -> f64 {
        self.rate() * self.mean
    }
}

/// Where a web VM is in its life, as far as capacity goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmPhase {
    /// Asked for and not yet taking requests (boot requested, BUILD, or ACTIVE and not
    /// yet in the pool): capacity on its way.
    Booting,
    /// In the splitter's pool, taking requests.
    Active,
    /// Leaving: no new requests, those in flight finish. Counts against `max_vms` until
    /// deleted, never as capacity.
    Draining,
}

/// One web VM of the group as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetVm {
    pub name: String,
    pub phase: VmPhase,
    /// When it was asked for (boot timeout, and which VM is newest).
    pub created_at: DateTime<Utc>,
    /// Requests in flight on it, from the splitter (jkstatus), when known.
    pub busy: Option<u32>,
}

/// What a policy looks at each tick.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Observations that arrived since the previous tick, oldest first (usually one).
    pub observations: &'a [Observation],
    /// The group's web VMs (failed ones already left out).
    pub fleet: &'a [FleetVm],
}

/// What kind of decision a tick made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Keep the size (VMs may still be booted to reach it, e.g. replacements).
    Hold,
    /// The size goes up.
    ScaleOut,
    /// The size goes down.
    ScaleIn,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Hold => "hold",
            Verdict::ScaleOut => "scale_out",
            Verdict::ScaleIn => "scale_in",
        }
    }
}

/// A tick's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Web VMs the site should have (booting and active, not draining), within
    /// `[min_vms, max_vms]`.
    pub desired: u32,
    /// VMs to boot now. `booting + active + draining + add <= max_vms` always holds.
    pub add: u32,
    /// VMs to drain and delete now, cheapest to drain first; never takes the VMs that
    /// stay below `min_vms`.
    pub remove: Vec<String>,
    /// The number the decision rests on, for graphs: the VMs the last observation needs
    /// (real-valued); `None` without observations.
    pub metric: Option<f64>,
    pub verdict: Verdict,
    /// One line for the operator: why.
    pub reason: String,
}

/// A scaling policy: a state machine fed once a tick.
pub trait ScalingPolicy: Send {
    /// The tick at `now`. Must never return `add` or `remove` that break the group's
    /// bounds, whatever the inputs.
    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision;

    /// Whether `observations`, newer than the last tick's, already call for a scaling
    /// action at `now`: a preview, nothing changes. The conductor (and the simulator)
    /// then decide at once instead of at the next tick. A policy that decides only on a
    /// schedule of its own says no (the default).
    fn acts_now(&self, _now: DateTime<Utc>, _observations: &[Observation]) -> bool {
        false
    }

    /// A short name for tables and logs.
    fn name(&self) -> &'static str;
}

/// Whether `vm` counts as capacity at `now`: active, or booting for less than
/// `boot_timeout` (capacity on its way). The one statement of that rule, for every policy.
pub fn counts_as_capacity(vm: &FleetVm, now: DateTime<Utc>, boot_timeout: Duration) -> bool {
    match vm.phase {
        VmPhase::Active => true,
        VmPhase::Booting => {
            ((now - vm.created_at).num_milliseconds() as f64 / 1000.0) < boot_timeout.as_secs_f64()
        }
        VmPhase::Draining => false,
    }
}

/// The VMs of `fleet` that count as capacity at `now` ([`counts_as_capacity`]).
pub fn fleet_capacity(now: DateTime<Utc>, fleet: &[FleetVm], boot_timeout: Duration) -> u32 {
    fleet
        .iter()
        .filter(|vm| counts_as_capacity(vm, now, boot_timeout))
        .count() as u32
}

/// Carries a size out the way the conductor does, for any policy: boots what is missing
/// (`desired` − booting − active, booting VMs counting as capacity until `boot_timeout`),
/// within `max_vms` with draining VMs counted; or, with more VMs than `desired`, names
/// the cheapest to drain: VMs still booting (nothing to drain), then those with the
/// fewest requests in flight (unknown last), then the newest. Returns `(add, remove)`.
///
/// Shared so that every policy the simulator compares turns its size into VMs alike.
pub fn carry_out(
    now: DateTime<Utc>,
    desired: u32,
    max_vms: u32,
    boot_timeout: Duration,
    fleet: &[FleetVm],
) -> (u32, Vec<String>) {
    let total = fleet.len() as u32;
    let capacity = fleet_capacity(now, fleet, boot_timeout);
    let add = desired
        .saturating_sub(capacity)
        .min(max_vms.saturating_sub(total));
    let mut remove = Vec::new();
    if capacity > desired {
        let mut candidates: Vec<&FleetVm> = fleet
            .iter()
            .filter(|vm| counts_as_capacity(vm, now, boot_timeout))
            .collect();
        candidates.sort_by(|a, b| {
            let booting = |vm: &FleetVm| vm.phase != VmPhase::Booting;
            booting(a)
                .cmp(&booting(b))
                .then(a.busy.unwrap_or(u32::MAX).cmp(&b.busy.unwrap_or(u32::MAX)))
                .then(b.created_at.cmp(&a.created_at))
                .then(a.name.cmp(&b.name))
        });
        remove = candidates
            .into_iter()
            .take((capacity - desired) as usize)
            .map(|vm| vm.name.clone())
            .collect();
    }
    (add, remove)
}
