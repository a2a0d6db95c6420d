//! The policy's stage: the minimum, scale-out, scale-in, bursts, and the rows.

use super::*;

#[test]
fn boots_the_splitter_and_the_minimum_once() {
    let mut site = Site::settled(2);
    let actions = site.tick_at(0.0, None);
    assert_eq!(boots(&actions), [Role::Splitter, Role::Web, Role::Web]);
    // Boots in flight count: nothing more is asked for.
    assert!(boots(&site.tick_at(1.0, None)).is_empty());
    // Booting VMs count too.
    site.booted(vm("s", Role::Splitter, VmStatus::Build, "127.0.1.2"));
    site.booted(vm("w1", Role::Web, VmStatus::Build, "127.0.1.3"));
    site.booted(vm("w2", Role::Web, VmStatus::Build, "127.0.1.4"));
    assert!(boots(&site.tick_at(2.0, None)).is_empty());
}

/// Members count as serving once the splitter applied the pool that holds them: a pool
/// sent is not routed to yet, and counting its members early reads the one VM still
/// serving as three slow ones (issue 16: a second scale-out, 3 -> 4, after the join).
#[test]
fn new_members_serve_once_the_splitter_applied_their_pool() {
    let (mut site, up) = scale_out_and_join(false);
    let joined = site.g.pool.generation;
    // The splitter is slow to carry the pool out: for 8 s it still routes to w1 alone.
    for _ in 0..8 {
        site.tick(Some(SLOW));
    }
    assert_eq!(site.ticks_notifying("autoscaler.scale.up"), [up]);
    // Applied: the three share the load, and the policy holds at 3.
    site.ack(joined);
    site.auto_ack = true;
    for _ in 0..10 {
        site.tick(Some(SPREAD));
    }
    assert_eq!(site.ticks_notifying("autoscaler.scale.up"), [up]);
    assert_eq!(site.g.serving(), 3);
}

#[test]
fn sustained_slow_seconds_scale_out_once_to_the_clients_over_capacity() {
    let (mut site, up) = scaled_out_to_three();
    for _ in 0..20 {
        site.tick(Some(SPREAD));
    }
    // Slow from 2 s, the group's first metrics: with no second before them to read the
    // step's share from, the first counts as none; 5 s after it ended (7 s) decides.
    assert_eq!(up, 7.0);
    assert_eq!(site.ticks_notifying("autoscaler.scale.up"), [up]);
    let (_, actions) = site.log.iter().find(|(t, _)| *t == up).unwrap();
    let payload = &notified(actions, "autoscaler.scale.up")[0];
    assert_eq!(
        (&payload["from"], &payload["to"], &payload["add"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(3),
            &serde_json::json!(2)
        )
    );
    let metric = payload["metric"].as_f64().unwrap();
    assert!((metric - 2.5).abs() < 1e-9, "{metric}");
    // Two boots, at once, replacing nothing; none while they are pending or BUILD, nor
    // once they serve.
    assert_eq!(site.web_boots(), [(up, None), (up, None)]);
    assert!(site.ticks_notifying("autoscaler.scale.down").is_empty());
    assert!(site.ticks_notifying("autoscaler.vm.failed").is_empty());
    assert!(site.log.iter().all(|(_, a)| deleted(a).is_empty()));
}

#[test]
fn scale_in_waits_for_scale_in_delay_of_low_seconds() {
    // (low seconds before the load is back, scale-in time). Fresh site: no cooldown.
    let cases = [(10, None), (14, None), (15, Some(16.0)), (20, Some(16.0))];
    for (low_seconds, expected) in cases {
        let mut site = Site::ready(1, &["w1", "w2", "w3"]);
        for _ in 0..low_seconds {
            site.tick(Some(LOW));
        }
        for _ in 0..5 {
            site.tick(Some(SPREAD));
        }
        assert_eq!(
            site.ticks_notifying("autoscaler.scale.down"),
            expected.into_iter().collect::<Vec<_>>(),
            "{low_seconds} low seconds"
        );
        assert!(site.ticks_notifying("autoscaler.scale.up").is_empty());
        assert!(site.web_boots().is_empty());
    }
}

#[test]
fn a_burst_shorter_than_stabilization_changes_nothing() {
    // Whole slow seconds between calm ones are that many seconds of load: under 5 of
    // them never act, 5 are a load change the policy must act on (the harness can see a
    // scale-out). Partial seconds: the policy's own tests.
    for (slow_seconds, scale_outs) in [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (7, 1)] {
        let mut site = Site::ready(1, &["w1"]);
        for _ in 0..10 {
            site.tick(Some(LOW));
        }
        for _ in 0..slow_seconds {
            site.tick(Some(SLOW));
        }
        for _ in 0..20 {
            site.tick(Some(LOW));
        }
        let what = format!("{slow_seconds} slow seconds");
        assert_eq!(
            site.ticks_notifying("autoscaler.scale.up").len(),
            scale_outs,
            "{what}"
        );
        assert!(
            site.ticks_notifying("autoscaler.scale.down").is_empty(),
            "{what}"
        );
        assert_eq!(site.web_boots().len(), 2 * scale_outs, "{what}");
        if scale_outs == 0 {
            assert!(
                site.log
                    .iter()
                    .all(|(_, a)| record(a).decision == "hold" && record(a).desired == 1),
                "{what}"
            );
        }
    }
}

#[test]
fn each_tick_records_one_row_with_the_fleet_and_the_decision() {
    // The link has just come up: a grace period with one VM serving.
    let mut site = Site::starting(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.agents_heard = true;
    site.auto_ack = true;
    let actions = site.tick_at(0.0, Some(LOW));
    let row = record(&actions);
    assert_eq!(row.decision, "hold");
    assert!(row.reason.contains("grace period"), "{}", row.reason);
    assert_eq!(
        (row.vms_booting, row.vms_active, row.vms_draining),
        (0, 1, 0)
    );
    assert_eq!((row.requests, row.rate), (30, 30.0));
    assert_eq!(row.mean_response_time, Some(0.05));
    assert_eq!(row.target_response_time, 0.2);
    assert_eq!(row.group, "shop");
    assert_eq!(row.time, at(0.0));

    // Settled at 3 s; then 36 clients on the one VM.
    for _ in 0..3 {
        site.tick(Some(LOW));
    }
    assert_eq!(record(&site.log[3].1).desired, 1);
    let mut scaling = None;
    while scaling.is_none() && site.now < 30.0 {
        let actions = site.tick(Some(SLOW));
        if record(&actions).decision != "hold" {
            scaling = Some(actions);
        }
    }
    let actions = scaling.expect("no scale-out");
    let row = record(&actions);
    assert_eq!(row.decision, "scale_out");
    assert!(row.reason.contains("1 -> 3"), "{}", row.reason);
    assert_eq!(row.desired, 3);
    assert!((row.metric.unwrap() - 2.5).abs() < 1e-9, "{row:?}");
    assert_eq!(
        (row.vms_booting, row.vms_active, row.vms_draining),
        (2, 1, 0),
        "the fleet after the decision: the boots asked for are booting"
    );
    assert_eq!((row.requests, row.mean_response_time), (80, Some(0.45)));
    assert!((row.in_flight.unwrap() - 36.0).abs() < 1e-9);
    // The boots asked for count as booting.
    let row = record(&site.tick(Some(SLOW))).clone();
    assert_eq!(
        (
            row.vms_booting,
            row.vms_active,
            row.vms_draining,
            row.desired
        ),
        (2, 1, 0, 3)
    );
    assert_eq!(row.decision, "hold");
    site.booted(web("w2", VmStatus::Build, "127.0.1.11", site.now + 1.0));
    let row = record(&site.tick(Some(SLOW))).clone();
    assert_eq!((row.vms_booting, row.vms_active, row.desired), (2, 1, 3));
    // One row a tick, all along.
    assert!(site
        .log
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .all(|(_, a)| a.iter().filter(|x| matches!(x, Action::Record(_))).count() == 1));
}

#[test]
fn boots_never_go_beyond_max_vms() {
    assert_eq!(crate::group::sizing::boots_within_bounds(3, 4, 2), 2);
    assert_eq!(crate::group::sizing::boots_within_bounds(1, 4, 4), 0);
    assert_eq!(crate::group::sizing::boots_within_bounds(2, 4, 9), 0);
    assert_eq!(crate::group::sizing::boots_within_bounds(2, 4, 0), 2);
}

/// Issue 17 (bounded intake): metrics whose start would overflow the time arithmetic are
/// left out, never a panic.
#[test]
fn metrics_at_the_end_of_time_are_left_out() {
    let mut far = Metrics {
        group: "shop".into(),
        vm_id: "s".into(),
        start: DateTime::<Utc>::MAX_UTC,
        interval: 1.0,
        site: Stats::default(),
        members: Vec::new(),
        malformed_lines: 0,
        modjk_messages: 0,
    };
    assert!(crate::group::sizing::observations(std::slice::from_ref(&far), 1).is_empty());
    far.start = at(0.0);
    assert_eq!(crate::group::sizing::observations(&[far], 1).len(), 1);
}
