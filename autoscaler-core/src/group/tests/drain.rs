//! Drains: removals keep serving until their replacement does, drain, then go.

use super::*;

#[test]
fn an_operator_removal_drains_first_then_deletes_and_keeps_the_minimum() {
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.heard_all(1.0);
    let first = pools(&site.tick_at(1.0, Some(LOW)))[0].clone();
    site.ack(first.generation);
    site.g.remove_vm("w1", at(1.0)).unwrap();

    site.heard_all(2.0);
    site.busy.insert("w1".into(), 3);
    let actions = site.tick_at(2.0, Some(LOW));
    assert_eq!(boots(&actions), [Role::Web], "a replacement boots first");
    assert!(
        pools(&actions).is_empty(),
        "w1 keeps serving: it is the only member"
    );

    // The replacement joins: w1 drains now.
    site.booted(vm("w2", Role::Web, VmStatus::Active, "127.0.1.4"));
    site.heard_all(3.0);
    let actions = site.tick_at(3.0, Some(LOW));
    let draining = &pools(&actions)[0];
    assert_eq!(
        members(draining),
        [("w1", MemberState::Draining), ("w2", MemberState::Active)]
    );
    assert!(deleted(&actions).is_empty(), "busy: not yet");

    // Applied and idle: deleted.
    site.ack(draining.generation);
    site.busy.insert("w1".into(), 0);
    site.heard_all(4.0);
    let actions = site.tick_at(4.0, Some(LOW));
    assert_eq!(deleted(&actions), ["id-w1"]);
    assert!(boots(&actions).is_empty());
}

#[test]
fn low_load_after_the_cooldown_scales_in_draining_before_deleting_never_below_min() {
    let (mut site, up) = scaled_out_to_three();
    // w2 is the cheapest to drain, then w3.
    site.busy = [("w1", 2), ("w2", 0), ("w3", 1)]
        .into_iter()
        .map(|(n, b)| (n.to_owned(), b))
        .collect();
    // The splitter acknowledges only when the test says so from here.
    site.auto_ack = false;
    for _ in 0..5 {
        site.tick(Some(SPREAD));
    }
    let low_from = site.now + 1.0;
    let mut down = None;
    while down.is_none() && site.now < up + 90.0 {
        let actions = site.tick(Some(LOW));
        if !notified(&actions, "autoscaler.scale.down").is_empty() {
            down = Some((site.now, actions));
        }
    }
    let (t_down, actions) = down.expect("no scale-in");
    // 15 low seconds (scale_in_delay) were there before the cooldown ended; the cooldown
    // (30 s after the scale-out) decides.
    assert!(t_down - low_from + 1.0 >= 15.0);
    assert_eq!(t_down, up + 30.0);
    let payload = &notified(&actions, "autoscaler.scale.down")[0];
    assert_eq!(
        (&payload["from"], &payload["to"], &payload["remove"]),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(["w2", "w3"])
        )
    );
    assert_eq!(record(&actions).decision, "scale_in");
    // Drained first: the splitter is told, nothing is deleted yet.
    let draining = pools(&actions)
        .pop()
        .expect("the draining pool is sent at once");
    assert_eq!(
        members(&draining),
        [
            ("w1", MemberState::Active),
            ("w2", MemberState::Draining),
            ("w3", MemberState::Draining)
        ]
    );
    assert!(deleted(&actions).is_empty());
    assert!(web_boots(&actions).is_empty());

    // Idle but the splitter has not applied the draining pool: not yet.
    let actions = site.tick(Some(LOW));
    assert!(deleted(&actions).is_empty(), "{actions:?}");
    let row = record(&actions);
    assert_eq!(
        (
            row.vms_booting,
            row.vms_active,
            row.vms_draining,
            row.desired
        ),
        (0, 1, 2, 1)
    );
    // Applied: the idle one goes, the busy one waits for its requests.
    site.ack(draining.generation);
    let actions = site.tick(Some(LOW));
    assert_eq!(deleted(&actions), ["id-w2"]);
    site.gone("w2");
    site.auto_ack = true;
    let actions = site.tick(Some(LOW));
    assert!(deleted(&actions).is_empty(), "w3 still busy: {actions:?}");
    site.busy.insert("w3".into(), 0);
    let actions = site.tick(Some(LOW));
    assert_eq!(deleted(&actions), ["id-w3"]);
    site.gone("w3");

    // Never below min, however long the load stays low.
    let settled_from = site.now;
    for _ in 0..90 {
        let actions = site.tick(Some(LOW));
        let row = record(&actions);
        assert_eq!((row.vms_active, row.desired), (1, 1), "{row:?}");
    }
    assert_eq!(site.ticks_notifying("autoscaler.scale.down"), [t_down]);
    assert!(
        site.web_boots().iter().all(|(t, _)| *t <= up),
        "no boot after the scale-out: {:?}",
        site.web_boots()
    );
    assert!(site
        .log
        .iter()
        .filter(|(t, _)| *t > settled_from)
        .all(|(_, a)| deleted(a).is_empty()));
    assert_eq!(members(&site.pool()), [("w1", MemberState::Active)]);
}

#[test]
fn drained_needs_the_applied_pool_and_no_request_in_flight_or_the_timeout() {
    use crate::group::drain::drained;
    assert!(drained(true, true, false));
    assert!(!drained(false, true, false));
    assert!(!drained(true, false, false));
    assert!(drained(false, false, true));
}
