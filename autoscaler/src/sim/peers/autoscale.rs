//! AutoScale (A. Gandhi, M. Harchol-Balter, R. Raghunathan, M. A. Kozuch, "AutoScale:
//! Dynamic, Robust Capacity Management for Multi-Tier Data Centers", ACM TOCS 30(4),
//! article 14, 2012).
//!
//! - **Scale-up from the requests in the system**: each server can hold `p` requests
//!   (the packing factor) and still meet the response-time target; with `n` requests in
//!   the system and fewer than `ceil(n / p)` servers on or in setup, it turns on the
//!   difference at once. The paper measures `p` offline; here it is the simulated VM's
//!   true value, `μ × target` (requests in flight a VM holds at the target), a head start
//!   no online policy has. `n` is the last second's requests in flight (L = λ·W).
//! - **Scale-down by idle timers**: a server idle for `t_wait` = 120 s (the paper's
//!   choice) is turned off. The paper's load balancer packs requests onto the
//!   lowest-numbered servers, so the servers beyond `ceil(n / p)` are the idle ones;
//!   mod_jk spreads requests over every member, so no member is ever idle here, and the
//!   timers run on that packing instead: the VMs beyond the first `ceil(n / p)` (oldest
//!   first) are idle, and the one whose timer expires is the one removed.
//! - Every second, with no stabilization: bursts move it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{decision, hold, secs, verdict, PeerSettings, Recent};
use crate::policy::{fleet_capacity, Decision, Inputs, ScalingPolicy, VmPhase};

const T_WAIT: f64 = 120.0;

#[derive(Debug, Clone)]
pub struct AutoScale {
    s: PeerSettings,
    packing: f64,
    recent: Recent,
    desired: Option<u32>,
    /// Since when each active VM has been idle under packing, by name.
    idle_since: BTreeMap<String, f64>,
}

impl AutoScale {
    /// `packing`: requests a VM holds within the target (the paper's `p`).
    pub fn new(s: PeerSettings, packing: f64) -> AutoScale {
        AutoScale {
            s,
            packing: packing.max(1e-9),
            recent: Recent::default(),
            desired: None,
            idle_since: BTreeMap::new(),
        }
    }
}

impl ScalingPolicy for AutoScale {
    fn name(&self) -> &'static str {
        "autoscale"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let t = secs(now);
        let s = self.s;
        self.recent.take(inputs.observations, t, 2.0);
        let on = fleet_capacity(now, inputs.fleet, s.boot_timeout);
        let current = *self.desired.get_or_insert(s.clamp(on));
        let Some(n) = self.recent.newest_in_flight() else {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                None,
                "no requests measured yet".into(),
            );
        };
        let needed = (n / self.packing - 1e-9).ceil().max(0.0) as u32;
        if needed > current && current < s.max_vms {
            let new = s.clamp(needed);
            self.desired = Some(new);
            self.idle_since.clear();
            return decision(now, &s, current, new, inputs.fleet, Some(n / self.packing), format!(
                "{n:.1} requests in the system need {needed} servers at {:.1} each: {current} -> {new}",
                self.packing
            ));
        }
        // Idle timers on the packing: the oldest `needed` VMs are busy, the rest idle.
        let mut actives: Vec<_> = inputs
            .fleet
            .iter()
            .filter(|vm| vm.phase == VmPhase::Active)
            .collect();
        actives.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        let busy = needed.max(s.min_vms) as usize;
        self.idle_since
            .retain(|name, _| actives.iter().skip(busy).any(|vm| &vm.name == name));
        let mut expired = Vec::new();
        for vm in actives.iter().skip(busy) {
            let since = *self.idle_since.entry(vm.name.clone()).or_insert(t);
            if t - since >= T_WAIT {
                expired.push(vm.name.clone());
            }
        }
        // Turn off the expired idle VMs (the newest first), never below the minimum.
        expired.reverse();
        expired.truncate(current.saturating_sub(s.min_vms) as usize);
        if expired.is_empty() {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                Some(n / self.packing),
                format!("{n:.1} requests in the system, {current} servers"),
            );
        }
        let new = current - expired.len() as u32;
        for name in &expired {
            self.idle_since.remove(name);
        }
        self.desired = Some(new);
        Decision {
            desired: new,
            add: 0,
            remove: expired.clone(),
            metric: Some(n / self.packing),
            verdict: verdict(current, new),
            reason: format!(
                "idle for {T_WAIT:.0} s under packing: {}: {current} -> {new}",
                expired.join(", ")
            ),
        }
    }
}
