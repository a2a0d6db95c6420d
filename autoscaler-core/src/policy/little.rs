//! [`LittlePolicy`], the product's scaling policy: Little's law sizing over a sliding
//! window of one-second observations (`doc/policy.md` explains it for operators).
//!
//! Each observation becomes a *need*: the VMs its load requires to be answered within the
//! aim, `target_response_time × (1 − margin)` ([`CapacityModel::needed`]). Then:
//!
//! - **Scale out** when the newest observations, all needing more VMs than the decided
//!   size (each judged on its last second), prove that need for `stabilization` seconds
//!   (the window counts seconds of observations, not messages, and reads a partial
//!   second's share by Little's law: [`super::window`]), to their mean need in one step
//!   (not +1 a tick). A load change shorter than `stabilization` seconds at a steady
//!   level never proves that: no action for it. With the default 5 s and the splitter's
//!   quarter-second observations, a lasting change is acted on 5 to 5.25 s after it
//!   shows.
//! - **Scale in** when the observations of the last `scale_in_delay` seconds all need
//!   fewer VMs than the decided size, to the largest need of the newest `stabilization`
//!   seconds of them (the level the load has
//!   settled at, not the tail of the busier period the longer window still holds: no
//!   two-step scale-in), and not within `scale_in_cooldown` of a scale-out (no flapping).
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

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    carry_out, fleet_capacity,
    window::{whole_vms, Sample, Window, JITTER_SECONDS},
    CapacityModel, Decision, Inputs, Observation, ScalingPolicy, Verdict,
};

/// Observations further apart than this are not consecutive: the window starts over.
const MAX_GAP_SECONDS: f64 = 2.5;
/// A tick whose newest observation is older than this holds, whatever the window says.
const STALE_SECONDS: f64 = 2.5;
/// An observation ending further than this after the tick's time is not believed (clock
/// skew between the splitter and the conductor is far smaller): it would make every
/// honest observation after it look old.
const FUTURE_SECONDS: f64 = 2.0;

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

    /// Seconds of observations, between the first and the last of a run, that prove a
    /// load change lasted long enough for a scale-out ([`super::window`]).
    pub fn scale_out_seconds(&self) -> f64 {
        self.stabilization.as_secs_f64()
    }

    /// Seconds of observations that must all need fewer VMs before a scale-in.
    pub fn scale_in_seconds(&self) -> f64 {
        self.scale_in_delay.as_secs_f64()
    }

    /// How far back the window keeps observations.
    fn horizon(&self) -> f64 {
        self.scale_in_seconds()
            .max(self.scale_out_seconds() + 2.0 * MAX_GAP_SECONDS)
    }
}

/// Little's law sizing with a stabilization window; see the module doc.
#[derive(Debug, Clone)]
pub struct LittlePolicy {
    settings: PolicySettings,
    model: CapacityModel,
    window: Window,
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
            window: Window::default(),
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
    fn take(&mut self, now: DateTime<Utc>, inputs: &Inputs<'_>) -> Option<f64> {
        let aim = self.settings.aim();
        let horizon = self.settings.horizon();
        let mut newest = None;
        for obs in inputs.observations {
            if self.last_observation.is_some_and(|last| obs.end <= last)
                || seconds(obs.end - now) > FUTURE_SECONDS
            {
                continue; // old, repeated, or from the future
            }
            // The time this observation adds: its interval, no more than since the last.
            let mut covers = obs.interval.clamp(0.0, MAX_GAP_SECONDS);
            if let Some(last) = self.last_observation {
                let since = seconds(obs.end - last);
                if since > MAX_GAP_SECONDS {
                    self.window.clear();
                } else {
                    covers = covers.min(since);
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
                    let sample = Sample {
                        need,
                        in_flight: obs.in_flight(),
                        seconds: covers,
                        smooth: need,
                        smooth_in_flight: obs.in_flight(),
                    };
                    self.window.push(sample, horizon);
                    newest = Some(need);
                }
                // Nobody serving (the pool is being built) or a nonsensical message:
                // no evidence either way, and the run of consecutive seconds breaks.
                None => self.window.clear(),
            }
        }
        newest
    }
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn clamp(x: u32, min: u32, max: u32) -> u32 {
    x.max(min).min(max.max(min))
}

impl LittlePolicy {
    /// The change the window calls for at size `desired`, if any: the verdict, the new
    /// size and why.
    fn change(&mut self, now: DateTime<Utc>, desired: u32) -> Option<(Verdict, u32, String)> {
        let s = &self.settings;
        let (min, max) = (s.min_vms, s.max_vms.max(s.min_vms));
        let out_s = s.scale_out_seconds();
        if desired < max {
            if let Some(run) = self.window.lasting(out_s, |x| x.vms() > desired) {
                let mean_need = run.mean_need();
                let new = clamp(whole_vms(mean_need), desired + 1, max);
                let reason = format!(
                    "for {:.2} s the load needed more than {desired} VMs (mean {mean_need:.2} \
                     at an aim of {:.3} s): {desired} -> {new}",
                    run.seconds(),
                    s.aim()
                );
                self.last_scale_out = Some(now);
                self.window.clear();
                return Some((Verdict::ScaleOut, new, reason));
            }
        }
        let cooled = self
            .last_scale_out
            .is_none_or(|t| seconds(now - t) >= s.scale_in_cooldown.as_secs_f64());
        let fewer = |x: &Sample| x.vms() < desired;
        let calm = self.window.seconds_showing(fewer);
        if !cooled || desired <= min || calm < s.scale_in_seconds() - JITTER_SECONDS {
            return None;
        }
        let run = self.window.newest(out_s);
        let most = run.most_vms();
        let new = clamp(most, min, desired - 1);
        let reason = format!(
            "for {calm:.2} s the load needed fewer than {desired} VMs, for the last {:.2} s \
             at most {most} at an aim of {:.3} s: {desired} -> {new}",
            run.seconds(),
            s.aim()
        );
        if !self.model.open_loop() {
            let before = run.mean_in_flight();
            let delay = chrono::TimeDelta::from_std(s.scale_in_delay).unwrap_or_default();
            self.watch_scale_in = Some((now + delay, before));
        }
        self.window.clear();
        Some((Verdict::ScaleIn, new, reason))
    }
}

impl ScalingPolicy for LittlePolicy {
    fn name(&self) -> &'static str {
        "autoscaler"
    }

    /// On a copy: the evidence the window would hold with `observations` added. Never
    /// before the first tick (which adopts the VMs that exist).
    fn acts_now(&self, now: DateTime<Utc>, observations: &[Observation]) -> bool {
        if self.desired.is_none() || observations.is_empty() {
            return false;
        }
        let inputs = Inputs {
            observations,
            fleet: &[],
        };
        self.clone().decide(now, inputs).verdict != Verdict::Hold
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let s = self.settings.clone();
        let (min, max) = (s.min_vms, s.max_vms.max(s.min_vms));
        let capacity = fleet_capacity(now, inputs.fleet, s.boot_timeout);
        let mut desired = *self.desired.get_or_insert(clamp(capacity, min, max));
        desired = clamp(desired, min, max);

        let metric = self.take(now, &inputs);
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
        } else if let Some((verdict, new, reason)) = self.change(now, desired) {
            desired = new;
            (verdict, reason)
        } else {
            let need = metric.map_or_else(|| "-".to_owned(), |n| format!("{n:.2}"));
            (
                Verdict::Hold,
                format!("the load needs {need} VMs, {desired} decided"),
            )
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
