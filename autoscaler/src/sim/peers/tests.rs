//! Unit tests of the peers' rules with plain inputs.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::policy::{FleetVm, Inputs, Observation, VmPhase};

fn at(t: f64) -> DateTime<Utc> {
    crate::sim::world::epoch() + TimeDelta::milliseconds((t * 1000.0) as i64)
}

fn settings(min: u32, max: u32) -> PeerSettings {
    PeerSettings {
        min_vms: min,
        max_vms: max,
        target_response_time: 0.2,
        boot_timeout: Duration::from_secs(300),
    }
}

fn fleet(k: u32) -> Vec<FleetVm> {
    (0..k)
        .map(|i| FleetVm {
            name: format!("web-{i}"),
            phase: VmPhase::Active,
            created_at: at(-600.0 + f64::from(i)),
            busy: Some(0),
        })
        .collect()
}

fn second(t: f64, requests: u64, mean: f64, serving: u32) -> Observation {
    Observation {
        end: at(t),
        interval: 1.0,
        requests,
        mean,
        p95: mean,
        serving,
    }
}

/// Feeds `seconds` ticks of a constant measurement; returns the last decision.
fn feed(
    policy: &mut dyn ScalingPolicy,
    from: f64,
    seconds: u32,
    requests: u64,
    mean: f64,
    vms: &[FleetVm],
) -> Decision {
    let mut last = None;
    for i in 0..seconds {
        let t = from + f64::from(i);
        let obs = [second(t, requests, mean, vms.len() as u32)];
        last = Some(policy.decide(
            at(t + 0.5),
            Inputs {
                observations: &obs,
                fleet: vms,
            },
        ));
    }
    last.unwrap()
}

#[test]
fn hpa_scales_by_the_ratio_at_sync_and_holds_within_tolerance() {
    let mut hpa = Hpa::new(settings(1, 10));
    let vms = fleet(2);
    // 0.21 s on a 0.2 s target: within 10 %: hold.
    let d = feed(&mut hpa, 0.0, 20, 100, 0.21, &vms);
    assert_eq!(d.desired, 2);
    // 0.5 s: ceil(2 × 2.5) = 5 at the next sync.
    let d = feed(&mut hpa, 20.0, 16, 100, 0.5, &vms);
    assert_eq!(d.desired, 5, "{}", d.reason);
}

#[test]
fn hpa_waits_300_s_before_scaling_down() {
    let mut hpa = Hpa::new(settings(1, 10));
    let vms = fleet(4);
    feed(&mut hpa, 0.0, 1, 100, 0.2, &vms);
    let d = feed(&mut hpa, 1.0, 290, 100, 0.05, &vms);
    assert_eq!(d.desired, 4, "{}", d.reason);
    let d = feed(&mut hpa, 291.0, 30, 100, 0.05, &vms);
    assert_eq!(d.desired, 1, "{}", d.reason);
}

#[test]
fn target_tracking_needs_three_breaching_minutes() {
    let mut tt = TargetTracking::new(settings(1, 10));
    let vms = fleet(2);
    let d = feed(&mut tt, 0.0, 170, 100, 0.4, &vms);
    assert_eq!(d.desired, 2, "2 datapoints: {}", d.reason);
    let d = feed(&mut tt, 170.0, 20, 100, 0.4, &vms);
    assert_eq!(d.desired, 4, "{}", d.reason);
}

#[test]
fn heat_adds_one_vm_a_minute_at_most() {
    let mut heat = HeatAodh::new(settings(1, 10));
    let vms = fleet(1);
    let d = feed(&mut heat, 0.0, 61, 100, 0.9, &vms);
    assert_eq!(d.desired, 2, "{}", d.reason);
    let d = feed(&mut heat, 61.0, 60, 100, 0.9, &vms);
    assert_eq!(d.desired, 3, "{}", d.reason);
}

#[test]
fn autoscale_packs_and_turns_idle_vms_off_after_t_wait() {
    // Packing 16 a VM: 40 in flight need 3.
    let mut auto = AutoScale::new(settings(1, 10), 16.0);
    let d = feed(&mut auto, 0.0, 1, 80, 0.5, &fleet(1));
    assert_eq!((d.desired, d.add), (3, 2), "{}", d.reason);
    // 3 VMs, 8 in flight: 2 idle under packing; off after 120 s.
    let vms = fleet(3);
    let d = feed(&mut auto, 1.0, 100, 160, 0.05, &vms);
    assert_eq!(d.desired, 3);
    let d = feed(&mut auto, 101.0, 30, 160, 0.05, &vms);
    assert_eq!(d.desired, 1, "{}", d.reason);
    assert_eq!(d.remove, ["web-2", "web-1"]);
}
