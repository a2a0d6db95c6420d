//! AWS EC2 Auto Scaling target tracking, with its defaults, tracking the site's mean
//! response time (a custom CloudWatch metric, `Average`) at the template's target.
//!
//! From the AWS documentation ("Target tracking scaling policies for Amazon EC2 Auto
//! Scaling", "Set the default instance warmup for an Auto Scaling group"):
//! - the metric is a one-minute datapoint (period 60 s);
//! - target tracking creates two alarms: scale-out when 3 consecutive datapoints are
//!   above the target, scale-in when 15 consecutive datapoints are below 90 % of it;
//! - the new capacity is proportional: `ceil(in-service capacity × metric / target)`,
//!   kept only when it is more (scale-out) or less (scale-in) than the desired capacity,
//!   so instances still launching count toward the desired capacity and are not asked
//!   for twice;
//! - instance warm-up 300 s (without a default instance warmup, the group's default
//!   cooldown, 300 s, applies); no scale-in while instances are warming up.
//!
//! The alarms are evaluated at every minute's end on the minute just ended (CloudWatch's
//! own publishing delay of a minute or more is not modelled: kinder than reality). A
//! minute without requests is missing data, which breaches neither alarm. AWS says
//! scale-in is "more gradual" without saying how; here it is proportional, once a
//! minute while the low alarm holds.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::{active, decision, hold, secs, PeerSettings, Recent};
use crate::policy::{fleet_capacity, Decision, Inputs, ScalingPolicy};

const PERIOD: f64 = 60.0;
const HIGH_DATAPOINTS: usize = 3;
const LOW_DATAPOINTS: usize = 15;
const LOW_FRACTION: f64 = 0.9;
const WARMUP: f64 = 300.0;

#[derive(Debug, Clone)]
pub struct TargetTracking {
    s: PeerSettings,
    recent: Recent,
    desired: Option<u32>,
    next_minute: Option<f64>,
    datapoints: VecDeque<Option<f64>>,
    launches: VecDeque<f64>,
}

impl TargetTracking {
    pub fn new(s: PeerSettings) -> TargetTracking {
        TargetTracking {
            s,
            recent: Recent::default(),
            desired: None,
            next_minute: None,
            datapoints: VecDeque::new(),
            launches: VecDeque::new(),
        }
    }

    fn all(&self, n: usize, test: impl Fn(f64) -> bool) -> bool {
        self.datapoints.len() >= n
            && self
                .datapoints
                .iter()
                .rev()
                .take(n)
                .all(|d| d.is_some_and(&test))
    }
}

impl ScalingPolicy for TargetTracking {
    fn name(&self) -> &'static str {
        "aws-target-tracking"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let t = secs(now);
        let s = self.s;
        self.recent.take(inputs.observations, t, PERIOD + 2.0);
        let current =
            *self
                .desired
                .get_or_insert(s.clamp(fleet_capacity(now, inputs.fleet, s.boot_timeout)));
        let minute_end = *self.next_minute.get_or_insert(t + PERIOD);
        if t < minute_end {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                None,
                format!("between datapoints: {current} instances"),
            );
        }
        self.next_minute = Some(minute_end + PERIOD);
        let datapoint = self.recent.mean(minute_end - PERIOD, minute_end);
        self.datapoints.push_back(datapoint);
        if self.datapoints.len() > LOW_DATAPOINTS {
            self.datapoints.pop_front();
        }
        while self.launches.front().is_some_and(|&l| l <= t - WARMUP) {
            self.launches.pop_front();
        }
        let target = s.target_response_time;
        let serving = active(inputs.fleet).max(1);
        let proportional = |m: f64| (f64::from(serving) * m / target - 1e-9).ceil().max(0.0) as u32;
        let mut new = current;
        let reason;
        match datapoint {
            Some(m) if self.all(HIGH_DATAPOINTS, |d| d > target) && proportional(m) > current => {
                new = s.clamp(proportional(m));
                reason = format!(
                    "alarm high ({HIGH_DATAPOINTS} datapoints over {target:.3} s, last {m:.3} s): \
                     {current} -> {new}"
                );
            }
            Some(m)
                if self.all(LOW_DATAPOINTS, |d| d < LOW_FRACTION * target)
                    && self.launches.is_empty()
                    && proportional(m) < current =>
            {
                new = s.clamp(proportional(m));
                reason = format!(
                    "alarm low ({LOW_DATAPOINTS} datapoints under {:.3} s, last {m:.3} s): \
                     {current} -> {new}",
                    LOW_FRACTION * target
                );
            }
            _ => {
                reason = format!(
                    "datapoint {}: {current} instances",
                    datapoint.map_or("missing".to_owned(), |m| format!("{m:.3} s"))
                );
            }
        }
        if new > current {
            self.launches.push_back(t);
        }
        self.desired = Some(new);
        decision(
            now,
            &s,
            current,
            new,
            inputs.fleet,
            datapoint.map(proportional).map(f64::from),
            reason,
        )
    }
}
