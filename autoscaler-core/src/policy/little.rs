//! [`LittlePolicy`], the product's scaling policy: Little's law sizing over a sliding
//! window of one-second observations (`doc/policy.md` explains it for operators).
//!
//! Each observation becomes a *need*: the VMs its load requires to be answered within the
//! aim, `target_response_time × (1 − margin)` ([`CapacityModel::needed`]). Then:
//!
//! - **Scale out** when each of the last `stabilization + 2` observations (7 for the
//!   default 5 s) needs more VMs than the decided size, to the mean need of those seconds
//!   in one step (not +1 a tick). A load change shorter than `stabilization` seconds
//!   touches at most `stabilization + 1` one-second observations (the first and the last
//!   partly), so it can never fill the window: no action for it.
//! - **Scale in** when each of the last `scale_in_delay` seconds (at least as many as
//!   scale-out looks at) needs fewer VMs than the decided size, to the largest need of
//!   the last `stabilization + 2` of them (the level the load has settled at, not the
//!   tail of the busier period the longer window still holds: no two-step scale-in),
//!   and not within `scale_in_cooldown` of a scale-out (no flapping).
//!   Removed first: VMs still booting (nothing to drain), then those with the fewest
//!   requests in flight, then the newest.
//! - **Hold** otherwise. Evidence is used once: after a change, the window starts over, so
//!   VMs booting for a load are never asked for twice (booting VMs count as capacity
//!   until `boot_timeout`). A gap in the observations (the splitter silent for more than
//!   2.5 s) also starts the window over, and a tick without fresh observations holds.
//!
//! - **Open loop, learned**: a scale-in after which the requests in flight more than
//!   double while the site is slower than the aim (closed-loop clients would have stayed
//!   as many) shows the load is open-loop; from then on the model also asks for the VMs
//!   that keep up with the arrivals ([`CapacityModel::learn_open_loop`]).
//!
//! Bounds, whatever the inputs: `min_vms <= desired <= max_vms`; VMs are added only while
//! booting + active + draining stay within `max_vms`; removals never go below `desired`.

use std::{collections::VecDeque, time::Duration};

use chrono::{DateTime, Utc};

use super::{carry_out, fleet_capacity, CapacityModel, Decision, Inputs, ScalingPolicy, Verdict};

/// Observations further apart than this are not consecutive: the window starts over.
const MAX_GAP_SECONDS: f64 = 2.5;
/// A tick whose newest observation is older than this holds, whatever the window says.
const STALE_SECONDS: f64 = 2.5;

/// The policy's knobs: the template's bounds and target, and `[policy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub min_vms: u32,
    pub max_vms: u32,
    /// The template's target mean response time, seconds.
    pub target_response_time: f64,
    /// Fraction of the target kept in reserve: the policy aims at
    /// `target × (1 − margin)`, so the settled mean stays just under the target.
    pub target_margin: f64,
    /// Load changes shorter than this never lead to an action.
    pub stabilization: Duration,
    /// How long the load must call for fewer VMs before any is removed.
    pub scale_in_delay: Duration,
    /// No VM is removed within this long after VMs were added.
    pub scale_in_cooldown: Duration,
    /// A VM booting for longer stops counting as capacity on its way.
    pub boot_timeout: Duration,
}

impl PolicySettings {
    /// The mean response time aimed at, seconds.
    pub fn aim(&self) -> f64 {
        self.target_response_time * (1.0 - self.target_margin)
    }

    /// Consecutive observations a scale-out needs: one per second of `stabilization`
    /// plus the two partial seconds a load change may begin and end in.
    pub fn scale_out_observations(&self) -> usize {
        self.stabilization.as_secs_f64().ceil() as usize + 2
    }

    /// Consecutive observations a scale-in needs.
    pub fn scale_in_observations(&self) -> usize {
        (self.scale_in_delay.as_secs_f64().ceil() as usize).max(self.scale_out_observations())
    }
}

/// One observation's verdict on the size: the VMs it needs.
#[derive(Debug, Clone, Copy)]
struct Sample {
    need: f64,
    /// Requests in flight (L = λ·W).
    in_flight: f64,
}

impl Sample {
    /// Whole VMs (a need of 3.0000001 is 4 VMs; 3.0 is 3).
    fn vms(self) -> u32 {
        let whole = (self.need - 1e-9).ceil();
        if whole <= 0.0 {
            0
        } else if whole >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            whole as u32
        }
    }
}

/// Little's law sizing with a stabilization window; see the module doc.
#[derive(Debug, Clone)]
pub struct LittlePolicy {
    settings: PolicySettings,
    model: CapacityModel,
    window: VecDeque<Sample>,
    /// The decided size; `None` until the first tick, which adopts the VMs that exist
    /// (a restarted conductor carries on from the cloud's state).
    desired: Option<u32>,
    last_scale_out: Option<DateTime<Utc>>,
    last_observation: Option<DateTime<Utc>>,
    /// After a scale-in, until when to watch for a pile-up of requests, and the requests
    /// in flight before it.
    watch_scale_in: Option<(DateTime<Utc>, f64)>,
}

/// Requests in flight more than this many times those before a scale-in (plus one, for
/// a nearly idle site) mean the load did not wait for the VMs that went: open loop.
const OPEN_LOOP_PILE_UP: f64 = 2.0;

impl LittlePolicy {
    pub fn new(settings: PolicySettings) -> LittlePolicy {
        LittlePolicy {
            settings,
            model: CapacityModel::default(),
            window: VecDeque::new(),
            desired: None,
            last_scale_out: None,
            last_observation: None,
            watch_scale_in: None,
        }
    }

    /// The decided size, once a tick has run.
    pub fn desired(&self) -> Option<u32> {
        self.desired
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The learned capacity model (for `template show` and the simulator's reports).
    pub fn model(&self) -> &CapacityModel {
        &self.model
    }

    /// Takes new observations into the window; returns the need of the newest one.
    fn take(&mut self, inputs: &Inputs<'_>) -> Option<f64> {
        let aim = self.settings.aim();
        let capacity = self.settings.scale_in_observations();
        let mut newest = None;
        for obs in inputs.observations {
            if self.last_observation.is_some_and(|last| obs.end <= last) {
                continue; // old or repeated
            }
            if let Some(last) = self.last_observation {
                if seconds(obs.end - last) > MAX_GAP_SECONDS {
                    self.window.clear();
                }
            }
            self.last_observation = Some(obs.end);
            self.model.observe(obs, aim);
            if let Some((until, before)) = self.watch_scale_in {
                if obs.end > until {
                    self.watch_scale_in = None;
                } else if obs.mean > aim && obs.in_flight() > OPEN_LOOP_PILE_UP * before + 1.0 {
                    self.model.learn_open_loop();
                    self.watch_scale_in = None;
                }
            }
            match self.model.needed(obs, aim) {
                Some(need) => {
                    self.window.push_back(Sample {
                        need,
                        in_flight: obs.in_flight(),
                    });
                    if self.window.len() > capacity {
                        self.window.pop_front();
                    }
                    newest = Some(need);
                }
                // Nobody serving (the pool is being built) or a nonsensical message:
                // no evidence either way, and the run of consecutive seconds breaks.
                None => self.window.clear(),
            }
        }
        newest
    }

    /// The newest `n` samples, if there are that many.
    fn last(&self, n: usize) -> Option<impl Iterator<Item = &Sample> + Clone> {
        (n > 0 && self.window.len() >= n).then(|| self.window.iter().skip(self.window.len() - n))
    }
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn clamp(x: u32, min: u32, max: u32) -> u32 {
    x.max(min).min(max.max(min))
}

impl ScalingPolicy for LittlePolicy {
    fn name(&self) -> &'static str {
        "autoscaler"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let s = self.settings.clone();
        let (min, max) = (s.min_vms, s.max_vms.max(s.min_vms));
        let capacity = fleet_capacity(now, inputs.fleet, s.boot_timeout);
        let mut desired = *self.desired.get_or_insert(clamp(capacity, min, max));
        desired = clamp(desired, min, max);

        let metric = self.take(&inputs);
        let stale = self
            .last_observation
            .is_none_or(|t| seconds(now - t) > STALE_SECONDS);
        let (verdict, reason) = if stale {
            (
                Verdict::Hold,
                match self.last_observation {
                    None => format!("no metrics from the splitter yet: holding {desired} VMs"),
                    Some(t) => format!(
                        "no metrics from the splitter for {:.0} s: holding {desired} VMs",
                        seconds(now - t)
                    ),
                },
            )
        } else {
            let out_n = s.scale_out_observations();
            let in_n = s.scale_in_observations();
            let scale_out = self
                .last(out_n)
                .filter(|w| desired < max && w.clone().all(|x| x.vms() > desired))
                .map(|w| w.map(|x| x.need).sum::<f64>() / out_n as f64);
            let cooled = self
                .last_scale_out
                .is_none_or(|t| seconds(now - t) >= s.scale_in_cooldown.as_secs_f64());
            let scale_in = self
                .last(in_n)
                .filter(|w| cooled && desired > min && w.clone().all(|x| x.vms() < desired))
                .and_then(|_| self.last(out_n))
                .map(|w| w.map(|x| x.vms()).max().unwrap_or(0));
            if let Some(mean_need) = scale_out {
                let new = clamp(
                    Sample {
                        need: mean_need,
                        in_flight: 0.0,
                    }
                    .vms(),
                    desired + 1,
                    max,
                );
                let reason = format!(
                    "for {out_n} s the load needed more than {desired} VMs (mean {mean_need:.2} \
                     at an aim of {:.3} s): {desired} -> {new}",
                    s.aim()
                );
                desired = new;
                self.last_scale_out = Some(now);
                self.window.clear();
                (Verdict::ScaleOut, reason)
            } else if let Some(most) = scale_in {
                let new = clamp(most, min, desired - 1);
                let reason = format!(
                    "for {in_n} s the load needed fewer than {desired} VMs, for the last {out_n} s \
                     at most {most} at an aim of {:.3} s: {desired} -> {new}",
                    s.aim()
                );
                desired = new;
                if !self.model.open_loop() {
                    let before = self
                        .last(out_n)
                        .map_or(0.0, |w| w.map(|x| x.in_flight).sum::<f64>() / out_n as f64);
                    let delay = chrono::TimeDelta::from_std(s.scale_in_delay).unwrap_or_default();
                    self.watch_scale_in = Some((now + delay, before));
                }
                self.window.clear();
                (Verdict::ScaleIn, reason)
            } else {
                let need = metric.map_or_else(|| "-".to_owned(), |n| format!("{n:.2}"));
                (
                    Verdict::Hold,
                    format!("the load needs {need} VMs, {desired} decided"),
                )
            }
        };
        self.desired = Some(desired);

        let (add, remove) = carry_out(now, desired, max, s.boot_timeout, inputs.fleet);
        Decision {
            desired,
            add,
            remove,
            metric,
            verdict,
            reason,
        }
    }
}
