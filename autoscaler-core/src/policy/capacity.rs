//! The capacity model behind [`LittlePolicy`](super::LittlePolicy): how many VMs a
//! measured second of load needs, and what one VM can do, learned from what the site has
//! shown.
//!
//! Little's law gives the load independently of the number of VMs: L = λ·W, the mean
//! number of requests in the site. A VM completes at most μ requests a second (its
//! capacity); with k VMs saturated the site completes k·μ, so the mean response time of
//! L requests in flight is W = L / (k·μ) (closed loop: the clients wait for their answer
//! before sending the next request, as ab does). Keeping W at or under the aim A takes
//! k ≥ L / (μ·A). See `doc/policy.md` for the assumptions and the open-loop case.
//!
//! μ is learned: each second in which the VMs are visibly saturated (the response time
//! well above the shortest seen, or above the aim) shows μ directly as the throughput per
//! serving VM, and an exponential average keeps it. Until the site has been saturated
//! once, the throughput per VM seen now stands in for μ; it can only be lower than the
//! real capacity, so the VMs needed are over-estimated, never under-estimated.
//!
//! **Open-loop load** (arrivals that do not wait for answers) breaks the closed-loop
//! assumption on the way down: fewer VMs do not make L stay, the arrivals λ stay. Once
//! the policy has seen that (a scale-in after which the requests in flight piled up, see
//! [`CapacityModel::learn_open_loop`]), a second also needs at least λ / μ VMs, the VMs
//! that merely keep up with the arrivals.

use chrono::{DateTime, Utc};

use super::Observation;

/// Weight of a new saturated second in the learned capacity (an observation of another
/// length weighs as that many seconds would: 1 − 0.7^interval).
const LEARNING_RATE: f64 = 0.3;
/// An observation counts towards the shortest response time (the service time) only
/// with at least this many requests: a couple of lucky requests say little.
const SERVICE_TIME_MIN_REQUESTS: u64 = 10;
/// Response time at least this many times the service time means requests queue: the
/// VMs are saturated.
const QUEUEING_FACTOR: f64 = 1.5;
/// Seconds after the number of serving VMs changed in which nothing is learned about μ:
/// the VMs that were there still work off their own queues while the new ones get only
/// new requests (mod_jk does not move a queued request), so the mean is slow while most
/// VMs are not saturated, and the throughput per VM reads low (issue 6: after a
/// backlog, μ read 37 where it is 80).
const UNBALANCED_SECONDS: f64 = 10.0;

/// Learned per-VM capacity and service time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityModel {
    /// μ: requests a second one VM completes when saturated.
    per_vm_rate: Option<f64>,
    /// Shortest mean response time seen over a busy enough second: the service time
    /// without queueing.
    service_time: Option<f64>,
    /// The load has shown itself open-loop: the arrival rate stays when VMs go.
    open_loop: bool,
    /// The serving VMs of the last observation, and the end of the observation that
    /// first showed that number (`None` before the first change).
    serving: Option<u32>,
    changed_at: Option<DateTime<Utc>>,
}

impl CapacityModel {
    /// The learned capacity of one VM, requests per second.
    pub fn per_vm_rate(&self) -> Option<f64> {
        self.per_vm_rate
    }

    /// The shortest mean response time seen, seconds.
    pub fn service_time(&self) -> Option<f64> {
        self.service_time
    }

    /// Whether the load has shown itself open-loop.
    pub fn open_loop(&self) -> bool {
        self.open_loop
    }

    /// The load turned out open-loop (issue 6: the simulator showed a scale-in to 1 VM
    /// under 100 req/s of Poisson arrivals, the backlog, a scale-out to max, and the same
    /// again every minute): from now on a second needs at least λ / μ VMs.
    pub fn learn_open_loop(&mut self) {
        self.open_loop = true;
    }

    /// Learns from one observation (normally a quarter of a second or a second). `aim`
    /// is the response time the policy aims at, seconds.
    pub fn observe(&mut self, obs: &Observation, aim: f64) {
        if self.serving.is_some_and(|s| s != obs.serving) {
            self.changed_at = Some(obs.end);
        }
        self.serving = Some(obs.serving);
        if obs.requests == 0 || obs.serving == 0 || !usable(obs) {
            return;
        }
        if obs.requests >= SERVICE_TIME_MIN_REQUESTS && obs.mean > 0.0 {
            self.service_time = Some(self.service_time.map_or(obs.mean, |s| s.min(obs.mean)));
        }
        let queueing = self
            .service_time
            .is_some_and(|s| obs.mean >= QUEUEING_FACTOR * s);
        let balanced = self
            .changed_at
            .is_none_or(|t| (obs.end - t).num_milliseconds() as f64 / 1000.0 >= UNBALANCED_SECONDS);
        if balanced && (queueing || obs.mean > aim) {
            let seen = obs.rate() / f64::from(obs.serving);
            let weight = 1.0 - (1.0 - LEARNING_RATE).powf(obs.interval.min(1.0));
            self.per_vm_rate = Some(match self.per_vm_rate {
                Some(mu) => mu + weight * (seen - mu),
                None => seen,
            });
        }
    }

    /// The VMs the load of `obs` needs to be answered within `aim` seconds on average:
    /// L / (μ·aim), real-valued. `None` when the second cannot be attributed (no serving
    /// VM, or a nonsensical measurement); `Some(0.0)` for an idle second.
    ///
    /// When the site is slower than the aim, the VMs are saturated and what they complete
    /// now *is* their capacity; otherwise the larger of the learned capacity and the
    /// current throughput per VM (a VM does at least what it is seen doing).
    pub fn needed(&self, obs: &Observation, aim: f64) -> Option<f64> {
        if obs.serving == 0 || !usable(obs) || aim <= 0.0 {
            return None;
        }
        if obs.requests == 0 {
            return Some(0.0);
        }
        let now_per_vm = obs.rate() / f64::from(obs.serving);
        let per_vm = if obs.mean > aim {
            now_per_vm
        } else {
            self.per_vm_rate.map_or(now_per_vm, |mu| mu.max(now_per_vm))
        };
        if per_vm <= 0.0 {
            return None;
        }
        let little = obs.in_flight() / (per_vm * aim);
        // Open loop: the remaining VMs must at least keep up with the arrivals. Only with
        // a learned capacity (the stand-in is the current throughput per VM, which would
        // make every VM look needed).
        let keep_up = match self.per_vm_rate {
            Some(mu) if self.open_loop && mu > 0.0 => obs.rate() / mu,
            _ => 0.0,
        };
        Some(little.max(keep_up))
    }
}

/// Whether the numbers can be computed with (a broken or hostile message must not turn
/// into infinities).
fn usable(obs: &Observation) -> bool {
    obs.interval.is_finite()
        && obs.interval > 0.0
        && obs.mean.is_finite()
        && obs.mean >= 0.0
        && obs.mean < 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(requests: u64, mean: f64, serving: u32) -> Observation {
        Observation {
            end: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            interval: 1.0,
            requests,
            mean,
            p95: mean,
            serving,
        }
    }

    #[test]
    fn saturated_seconds_teach_the_capacity() {
        let mut model = CapacityModel::default();
        // 50 ms service time at low load, then 2 VMs saturated at 80 req/s each.
        model.observe(&obs(40, 0.05, 2), 0.18);
        assert_eq!(model.per_vm_rate(), None);
        model.observe(&obs(160, 0.25, 2), 0.18);
        assert_eq!(model.per_vm_rate(), Some(80.0));
        assert_eq!(model.service_time(), Some(0.05));
    }

    #[test]
    fn closed_loop_need_is_clients_over_capacity_times_aim() {
        let mut model = CapacityModel::default();
        model.observe(&obs(40, 0.05, 2), 0.18);
        model.observe(&obs(160, 0.25, 2), 0.18);
        // 40 clients on 2 VMs: W = 40 / 160 = 0.25 s; they need 40 / (80 * 0.18) VMs.
        let need = model.needed(&obs(160, 0.25, 2), 0.18).unwrap();
        assert!((need - 40.0 / (80.0 * 0.18)).abs() < 1e-9, "{need}");
        // The same 40 clients on 4 VMs unsaturated: the learned capacity still applies.
        let need = model.needed(&obs(320, 0.125, 4), 0.18).unwrap();
        assert!((need - 40.0 / (80.0 * 0.18)).abs() < 1e-9, "{need}");
    }

    #[test]
    fn without_learning_the_need_is_over_rather_than_under_estimated() {
        let model = CapacityModel::default();
        // 8 clients on 4 VMs of capacity 80 (service 50 ms): 160 req/s, W = 0.05; the real
        // need is 8 / (80 * 0.18) = 0.56 VM, the estimate from 40 req/s per VM is larger.
        let need = model.needed(&obs(160, 0.05, 4), 0.18).unwrap();
        assert!(need >= 8.0 / (80.0 * 0.18), "{need}");
    }

    #[test]
    fn issue_6_open_loop_load_needs_the_vms_that_keep_up_with_the_arrivals() {
        let mut model = CapacityModel::default();
        model.observe(&obs(40, 0.05, 2), 0.18);
        model.observe(&obs(160, 0.25, 2), 0.18);
        // 100 req/s on 4 VMs answered in 50 ms: L = 5, Little's need 5 / 14.4 = 0.35 VM;
        // but 1 VM completes 80 req/s at most.
        let fast = obs(100, 0.05, 4);
        assert!(model.needed(&fast, 0.18).unwrap() < 0.5);
        model.learn_open_loop();
        assert!(model.open_loop());
        let need = model.needed(&fast, 0.18).unwrap();
        assert!((need - 100.0 / 80.0).abs() < 1e-9, "{need}");
    }

    #[test]
    fn idle_and_unattributable_seconds() {
        let model = CapacityModel::default();
        assert_eq!(model.needed(&obs(0, 0.0, 2), 0.18), Some(0.0));
        assert_eq!(model.needed(&obs(10, 0.1, 0), 0.18), None);
        let mut bad = obs(10, f64::NAN, 2);
        assert_eq!(model.needed(&bad, 0.18), None);
        bad.mean = 0.1;
        bad.interval = 0.0;
        assert_eq!(model.needed(&bad, 0.18), None);
    }
}
