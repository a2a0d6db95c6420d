//! Kubernetes' Horizontal Pod Autoscaler (autoscaling/v2), with its defaults, tracking
//! the site's mean response time as an Object metric with a `Value` target.
//!
//! From the Kubernetes documentation, "Horizontal Pod Autoscaling" (algorithm details,
//! default behavior) and kube-controller-manager's flags:
//! - `desiredReplicas = ceil(currentReplicas × currentMetricValue / desiredMetricValue)`,
//!   where `currentReplicas` is the scale's replica count (booting pods included);
//! - no change while the ratio is within `--horizontal-pod-autoscaler-tolerance` = 0.1;
//! - evaluated every `--horizontal-pod-autoscaler-sync-period` = 15 s;
//! - scale-down stabilization window 300 s (the highest recommendation of the last
//!   300 s is used); scale-up stabilization 0 s;
//! - scale-up limit per 15 s period: the larger of +100 % and +4 pods; scale-down limit:
//!   −100 % per 15 s (no limit).
//!
//! The metric is averaged over 15 s, the metrics pipeline's resolution (metrics-server
//! collects every 15 s, its documented default). A sync without requests keeps the size
//! (the metric has no value).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::{decision, hold, secs, PeerSettings, Recent};
use crate::policy::{fleet_capacity, Decision, Inputs, ScalingPolicy};

const SYNC_PERIOD: f64 = 15.0;
const TOLERANCE: f64 = 0.1;
const SCALE_DOWN_STABILIZATION: f64 = 300.0;
const METRIC_WINDOW: f64 = 15.0;
const SCALE_UP_PERCENT: u32 = 100;
const SCALE_UP_PODS: u32 = 4;

#[derive(Debug, Clone)]
pub struct Hpa {
    s: PeerSettings,
    recent: Recent,
    desired: Option<u32>,
    next_sync: Option<f64>,
    /// (time, recommendation) of the last `SCALE_DOWN_STABILIZATION` seconds.
    recommendations: VecDeque<(f64, u32)>,
}

impl Hpa {
    pub fn new(s: PeerSettings) -> Hpa {
        Hpa {
            s,
            recent: Recent::default(),
            desired: None,
            next_sync: None,
            recommendations: VecDeque::new(),
        }
    }
}

impl ScalingPolicy for Hpa {
    fn name(&self) -> &'static str {
        "k8s-hpa"
    }

    fn decide(&mut self, now: DateTime<Utc>, inputs: Inputs<'_>) -> Decision {
        let t = secs(now);
        let s = self.s;
        self.recent
            .take(inputs.observations, t, METRIC_WINDOW + 2.0);
        let current =
            *self
                .desired
                .get_or_insert(s.clamp(fleet_capacity(now, inputs.fleet, s.boot_timeout)));
        let next_sync = *self.next_sync.get_or_insert(t);
        let metric = self.recent.mean(t - METRIC_WINDOW, t);
        if t < next_sync {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                metric,
                format!("between syncs: {current} replicas"),
            );
        }
        let mut next = next_sync;
        while next <= t {
            next += SYNC_PERIOD;
        }
        self.next_sync = Some(next);

        let Some(value) = metric else {
            return hold(
                now,
                &s,
                current,
                inputs.fleet,
                None,
                format!("no metric value: {current} replicas"),
            );
        };
        let ratio = value / s.target_response_time;
        let recommendation = if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            (f64::from(current) * ratio - 1e-9).ceil().max(0.0) as u32
        };
        self.recommendations.push_back((t, recommendation));
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| at <= t - SCALE_DOWN_STABILIZATION)
        {
            self.recommendations.pop_front();
        }
        let down = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommendation);
        let stabilized = if recommendation > current {
            recommendation
        } else if down < current {
            down
        } else {
            current
        };
        let up_limit = (current + current * SCALE_UP_PERCENT / 100).max(current + SCALE_UP_PODS);
        let new = s.clamp(stabilized.min(up_limit));
        self.desired = Some(new);
        decision(
            now,
            &s,
            current,
            new,
            inputs.fleet,
            Some(ratio * f64::from(current)),
            format!(
            "metric {value:.3} s / target {:.3} s = {ratio:.2}: recommendation {recommendation}, \
             stabilized {stabilized}: {current} -> {new}",
            s.target_response_time
        ),
        )
    }
}
