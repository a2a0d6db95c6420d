//! OpenStack Heat (`OS::Heat::AutoScalingGroup` with two `OS::Heat::ScalingPolicy`s)
//! driven by Aodh threshold alarms on the site's mean response time.
//!
//! Defaults and conventions, with their sources:
//! - Aodh evaluates alarms every 60 s (`[DEFAULT] evaluation_interval = 60`, aodh.conf);
//! - the alarms aggregate the metric's `mean` over a granularity of 60 s, one evaluation
//!   period (Aodh's `evaluation_periods` default is 1);
//! - `repeat_actions: true`, as in the heat-templates autoscaling examples (otherwise a
//!   lasting alarm fires once);
//! - each policy is `adjustment_type: change_in_capacity`, `scaling_adjustment: +1` or
//!   `-1`, `cooldown: 60` (the heat-templates autoscaling examples);
//! - thresholds are the user's: here scale-up above the target, scale-down under half of
//!   it (the examples use 50 % and 15 % CPU; half the target is our choice).
//!
//! Kinder than reality: the metric is the splitter's per-second data aggregated to 60 s;
//! through Ceilometer it would be polled every 300 s (polling.yaml's default interval).

use chrono::{DateTime, Utc};

use super::{decision, hold, secs, PeerSettings, Recent};
use crate::policy::{fleet_capacity, Decision, Inputs, ScalingPolicy};

const EVALUATION_INTERVAL: f64 = 60.0;
const GRANULARITY: f64 = 60.0;
const COOLDOWN: f64 = 60.0;
const LOW_FRACTION: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct HeatAodh {
    s: PeerSettings,
    recent: Recent,
    desired: Option<u32>,
    next_evaluation: Option<f64>,
    up_cooldown_until: f64,
    down_cooldown_until: f64,
}

impl HeatAodh {
    pub fn new(s: PeerSettings) -> HeatAodh {
        HeatAodh {
            s,
            recent: Recent::default(),
            desired: None,
            next_evaluation: None,
            up_cooldown_until: f64::NEG_INFINITY,
            down_cooldown_until: f64::NEG_INFINITY,
        }
    }
}

impl ScalingPolicy for HeatAodh {
    fn name(&self) -> &'static str {
        "heat-aodh"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let t = secs(now);
        let s = self.s;
        self.recent.take(inputs.observations, t, GRANULARITY + 2.0);
        let current =
            *self
                .desired
                .get_or_insert(s.clamp(fleet_capacity(now, inputs.fleet, s.boot_timeout)));
        let due = *self.next_evaluation.get_or_insert(t + EVALUATION_INTERVAL);
        if t < due {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                None,
                format!("between alarm evaluations: {current} VMs"),
            );
        }
        self.next_evaluation = Some(due + EVALUATION_INTERVAL);
        let mean = self.recent.mean(t - GRANULARITY, t);
        let target = s.target_response_time;
        let mut new = current;
        let reason = match mean {
            Some(m) if m > target && t >= self.up_cooldown_until => {
                new = s.clamp(current + 1);
                self.up_cooldown_until = t + COOLDOWN;
                format!("alarm high ({m:.3} s > {target:.3} s): +1: {current} -> {new}")
            }
            Some(m) if m < LOW_FRACTION * target && t >= self.down_cooldown_until => {
                new = s.clamp(current.saturating_sub(1));
                self.down_cooldown_until = t + COOLDOWN;
                format!(
                    "alarm low ({m:.3} s < {:.3} s): -1: {current} -> {new}",
                    LOW_FRACTION * target
                )
            }
            Some(m) => format!("mean {m:.3} s: {current} VMs"),
            None => format!("insufficient data: {current} VMs"),
        };
        self.desired = Some(new);
        decision(
            now,
            &s,
            current,
            new,
            inputs.fleet,
            mean.map(|m| m / target * f64::from(current)),
            reason,
        )
    }
}
