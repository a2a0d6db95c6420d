//! Tests of the simulator as a whole: determinism (same seed, same CSV byte for byte),
//! the model against queueing theory, the bounds for every policy, and the guarantees of
//! ours in the loop (no action for a burst under 5 s, scale-out in one step).

use std::path::Path;

use proptest::prelude::*;

use super::{
    load::Load,
    peers::PolicyKind,
    score::score,
    suite::{load_file, SUITE},
    world::{run, Fault, FaultKind, SimConfig},
};
use crate::{conductor::timeseries::TimeSeries, scenario::Scenario};

fn closed(text: &str) -> Load {
    Load::closed(&Scenario::parse("test", text).unwrap())
}

fn csv_bytes(config: &SimConfig, load: &Load, kind: PolicyKind) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut series = TimeSeries::new(dir.path().to_owned());
    let mut policy = kind.build(config, load);
    for row in run(config, load, policy.as_mut()).rows {
        series.append(&row).unwrap();
    }
    std::fs::read(series.path(&config.group)).unwrap()
}

#[test]
fn issue_6_same_seed_gives_a_byte_identical_csv() {
    let load = closed("20 4 low\n3 60 burst\n27 4 low\n60 36 high\n40 4 low\n");
    let mut config = crate::sim::suite::suite_site(42, 4);
    config.faults = vec![Fault {
        at: 100.0,
        kind: FaultKind::HeartbeatLost,
    }];
    for kind in PolicyKind::ALL {
        let a = csv_bytes(&config, &load, kind);
        let b = csv_bytes(&config, &load, kind);
        assert!(a.len() > 1000, "{kind}");
        assert!(a == b, "{kind}: two runs differ");
    }
    let other = SimConfig {
        seed: 43,
        ..config.clone()
    };
    assert_ne!(
        csv_bytes(&config, &load, PolicyKind::Autoscaler),
        csv_bytes(&other, &load, PolicyKind::Autoscaler),
        "another seed, another run"
    );
}

#[test]
fn the_csv_is_the_conductors_format() {
    let load = closed("10 4 low\n");
    let config = SimConfig::local_images(1);
    let bytes = csv_bytes(&config, &load, PolicyKind::Autoscaler);
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text.lines().next(),
        Some(crate::conductor::timeseries::HEADER)
    );
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("2030-01-01T00:00:01.600Z,sim,"));
}

#[test]
fn closed_loop_saturation_matches_the_model() {
    // 36 clients on 1 VM of 4 threads, 50 ms: X = 80 req/s, W = 36 / 80 = 0.45 s.
    let load = closed("60 36 high\n");
    let config = SimConfig {
        max_vms: 1,
        ..SimConfig::local_images(1)
    };
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let steady: Vec<_> = result.rows.iter().skip(5).collect();
    let rate = steady.iter().map(|r| r.rate).sum::<f64>() / steady.len() as f64;
    let mean = steady
        .iter()
        .map(|r| r.mean_response_time.unwrap())
        .sum::<f64>()
        / steady.len() as f64;
    assert!((rate - 80.0).abs() < 1.0, "{rate}");
    assert!((mean - 0.45).abs() < 0.01, "{mean}");
    assert!((result.vm_seconds - 60.0).abs() < 1e-9);
}

#[test]
fn open_loop_below_capacity_has_the_offered_rate() {
    let load = Load::parse_trace("t", "seconds,rate\n120,60\n").unwrap();
    let config = SimConfig::local_images(3);
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let total: u64 = result.rows.iter().map(|r| r.requests).sum();
    assert!((total as f64 / 120.0 - 60.0).abs() < 3.0, "{total}");
}

#[test]
fn ours_ignores_a_burst_and_scales_out_in_one_step() {
    let load = closed("30 4 low\n4 60 burst\n40 4 low\n120 36 high\n");
    let config = crate::sim::suite::suite_site(7, 4);
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let actions: Vec<_> = result
        .rows
        .iter()
        .filter(|r| r.decision != "hold")
        .collect();
    assert_eq!(
        actions.len(),
        1,
        "{:?}",
        actions
            .iter()
            .map(|r| (&r.time, &r.reason))
            .collect::<Vec<_>>()
    );
    assert_eq!(actions[0].decision, "scale_out");
    assert_eq!(actions[0].desired, 3, "{}", actions[0].reason);
    let s = score(&result, &load, &config);
    assert_eq!(s.burst_actions, 0);
    assert_eq!(s.bound_violations, 0);
}

#[test]
fn a_crashed_vm_is_replaced() {
    let load = closed("200 36 high\n");
    let mut config = crate::sim::suite::suite_site(5, 4);
    config.faults = vec![Fault {
        at: 100.0,
        kind: FaultKind::Crash,
    }];
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let last = result.rows.last().unwrap();
    assert_eq!(last.vms_active, 3, "{last:?}");
    assert!(result.phases[0].failed > 0, "the crash failed requests");
    let after = result
        .rows
        .iter()
        .find(|r| r.time > super::world::epoch() + chrono::TimeDelta::seconds(104))
        .unwrap();
    assert!(after.vms_booting >= 1, "{after:?}");
}

#[test]
fn issue_6_open_loop_load_makes_ours_flap_once_at_most() {
    // 100 req/s of Poisson arrivals: 4 VMs answer in about 50 ms, Little's law alone
    // says 1 VM (L = 5), which completes only 80 req/s. Before the fix: 4 -> 1 -> 4
    // every minute.
    let load = Load::parse_trace("t", "seconds,rate\n600,100\n").unwrap();
    let mut config = crate::sim::suite::suite_site(3, 4);
    config.min_vms = 1;
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let changes: Vec<(String, u32)> = result
        .rows
        .iter()
        .filter(|r| r.decision != "hold")
        .map(|r| (r.decision.clone(), r.desired))
        .collect();
    let scale_ins = changes.iter().filter(|c| c.0 == "scale_in").count();
    assert!(scale_ins <= 2, "{changes:?}");
    let last = result.rows.last().unwrap();
    assert_eq!(last.vms_active, 2, "keeps up with 100 req/s: {changes:?}");
    let late_over = result.rows[300..]
        .iter()
        .filter(|r| r.mean_response_time.is_some_and(|m| m > 0.2))
        .count();
    assert_eq!(late_over, 0, "{changes:?}");
}

#[test]
fn the_oracle_meets_the_target_in_steady_state() {
    let load = closed("60 4 low\n120 36 high\n60 4 low\n");
    let config = crate::sim::suite::suite_site(11, 4);
    let mut policy = PolicyKind::Oracle.build(&config, &load);
    let result = run(&config, &load, policy.as_mut());
    let s = score(&result, &load, &config);
    assert!(s.over_target <= 2, "{s:?}");
    // 60 s at 1 VM, 120 s at 3 (booted 33 s ahead), 60 s at 1.
    assert!(
        s.vm_seconds < 60.0 + 3.0 * 120.0 + 2.0 * 40.0 + 60.0,
        "{s:?}"
    );
}

#[test]
fn every_suite_file_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/scenarios");
    for entry in SUITE {
        let load = load_file(&root.join(entry.file)).unwrap();
        assert!(load.seconds() > 60.0, "{}", entry.name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the load, every policy stays within its bounds.
    #[test]
    fn every_policy_keeps_the_bounds(
        phases in prop::collection::vec((1u32..40, 0u32..80), 1..6),
        min in 1u32..3,
        extra in 0u32..4,
        seed in 0u64..1000,
    ) {
        let text: String = phases.iter().map(|(s, c)| format!("{s} {c}\n")).collect();
        let load = closed(&text);
        let config = SimConfig {
            min_vms: min,
            max_vms: min + extra,
            faults: vec![Fault { at: 20.0, kind: FaultKind::Crash }],
            ..crate::sim::suite::suite_site(seed, min + extra)
        };
        for kind in PolicyKind::ALL {
            let mut policy = kind.build(&config, &load);
            let result = run(&config, &load, policy.as_mut());
            prop_assert_eq!(result.bound_violations, 0, "{}", kind);
            for row in &result.rows {
                prop_assert!(row.vms_booting + row.vms_active + row.vms_draining <= config.max_vms, "{} {:?}", kind, row);
                prop_assert!(row.desired >= config.min_vms && row.desired <= config.max_vms, "{} {:?}", kind, row);
            }
        }
    }
}
