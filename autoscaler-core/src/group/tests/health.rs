//! Health: which VMs fail, when, and when silence proves nothing.

use super::*;
use crate::group::health::{judge, Hearing, VmFacts};
use crate::notification::Cause;

/// Regression (issue 4, broker cut): the conductor goes deaf before its link notices; the
/// VMs' last heartbeats are spread over an interval, so the stalest crosses
/// heartbeat_timeout while the others are still "fresh". Nothing may fail.
#[test]
fn a_deaf_conductor_does_not_fail_the_vm_heard_least_recently() {
    let mut site = Site::settled(2)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active)
        .web("w2", VmStatus::Active);
    site.heard("s", 10.0);
    site.heard("w1", 10.4);
    site.heard("w2", 10.9);
    for t in [11.0, 12.0, 13.0, 13.2, 13.5, 13.8, 14.0, 15.0, 20.0] {
        let actions = site.tick_at(t, None);
        assert!(deleted(&actions).is_empty(), "at {t}: {actions:?}");
        // Nor does the splitter lose its members (an empty pool is a 503 for all).
        for pool in pools(&actions) {
            assert_eq!(pool.members.len(), 2, "at {t}: {pool:?}");
        }
    }
    // Hearing again, while one VM stays silent: that one has failed.
    site.heard("s", 21.0);
    site.heard("w2", 21.0);
    let actions = site.tick_at(21.1, None);
    assert_eq!(deleted(&actions), ["id-w1"]);
}

#[test]
fn a_silent_vm_is_reported_once_dropped_from_the_pool_and_replaced() {
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.heard_all(10.0);
    site.tick_at(10.0, None);
    // 3.5 s later the splitter still speaks, w1 does not.
    site.heard("s", 13.5);
    let actions = site.tick_at(13.5, None);
    let failed = notified(&actions, "autoscaler.vm.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["cause"], "heartbeat_lost");
    assert_eq!(deleted(&actions), ["id-w1"]);
    assert_eq!(boots(&actions), [Role::Web], "the minimum is kept");
    assert!(pools(&actions)[0].members.is_empty());
    // Reported once.
    let again = site.tick_at(14.0, None);
    assert!(!again.iter().any(|a| matches!(a, Action::Notify(_))));
}

#[test]
fn a_broker_outage_is_no_evidence() {
    let mut site = Site::starting(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.heard_all(10.0);
    site.link_up = false;
    let actions = site.tick_at(20.0, None);
    assert!(deleted(&actions).is_empty(), "{actions:?}");
}

#[test]
fn a_crashed_vm_is_reported_as_failed() {
    let mut site = Site::starting(1).web("w1", VmStatus::Shutoff);
    let actions = site.tick_at(1.0, None);
    let failed = notified(&actions, "autoscaler.vm.failed");
    assert_eq!(failed[0]["cause"], "status");
    assert_eq!(deleted(&actions), ["id-w1"]);
}

#[test]
fn a_web_vm_still_building_after_boot_timeout_is_failed_deleted_and_replaced() {
    let mut site =
        Site::settled(1)
            .splitter("s", VmStatus::Active)
            .with(web("w1", VmStatus::Build, "", 0.0));
    site.agents_heard = true;
    site.auto_ack = true;
    // Booting within boot_timeout (300 s): capacity on its way, nothing to do.
    for t in [1.0, 2.0, 150.0, 299.5] {
        let actions = site.tick_at(t, None);
        assert!(web_boots(&actions).is_empty(), "{t}: {actions:?}");
        assert!(notified(&actions, "autoscaler.vm.failed").is_empty(), "{t}");
    }
    let actions = site.tick_at(300.5, None);
    let failed = notified(&actions, "autoscaler.vm.failed");
    assert_eq!(failed.len(), 1, "{actions:?}");
    assert_eq!(
        (
            &failed[0]["vm_name"],
            &failed[0]["cause"],
            &failed[0]["role"]
        ),
        (
            &serde_json::json!("w1"),
            &serde_json::json!("boot_timeout"),
            &serde_json::json!("web")
        )
    );
    assert_eq!(deleted(&actions), ["id-w1"]);
    // Reported once; replaced once, naming it (boots may be held back a few seconds after
    // a VM that was never heard).
    for t in 1..=10 {
        let actions = site.tick_at(300.5 + f64::from(t), None);
        assert!(
            notified(&actions, "autoscaler.vm.failed").is_empty(),
            "{actions:?}"
        );
    }
    let boots = site.web_boots();
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert_eq!(boots[0].1.as_deref(), Some("w1"));
    assert!(boots[0].0 <= 300.5 + 2.0, "{boots:?}");
}

#[test]
fn a_boot_timed_out_at_a_whole_tick_is_named_by_its_replacement() {
    let mut site =
        Site::settled(1)
            .splitter("s", VmStatus::Active)
            .with(web("w1", VmStatus::Build, "", 0.0));
    site.agents_heard = true;
    site.auto_ack = true;
    for t in [1.0, 299.0, 300.0, 301.0, 302.0, 303.0, 304.0, 305.0] {
        site.tick_at(t, None);
    }
    // One boot, the replacement, naming w1 (whenever a hold on boots lets it go).
    let replaces: Vec<Option<String>> = site.web_boots().into_iter().map(|(_, r)| r).collect();
    assert_eq!(replaces, [Some("w1".to_owned())], "{:?}", site.web_boots());
}

/// Ticks a one-web-VM site from 391 s to 420 s; w1 (asked for at `created`) has its
/// server stop answering from `stops` (it answered before unless `stops` is 391 or
/// earlier). Deletes are carried out at once.
fn stops_serving_at(created: f64, stops: u32) -> Site {
    let mut site = Site::settled(1).splitter("s", VmStatus::Active).with(web(
        "w1",
        VmStatus::Active,
        "127.0.1.10",
        created,
    ));
    site.agents_heard = true;
    site.auto_ack = true;
    for t in 391..=420 {
        if t == stops {
            site.unserving.insert("w1".into());
        }
        let actions = site.tick_at(f64::from(t), Some(LOW));
        if deleted(&actions).contains(&"id-w1") {
            site.gone("w1");
        }
    }
    site
}

fn stops_serving(created: f64) -> Site {
    stops_serving_at(created, 401)
}

/// Regression (issue 16, item 1): a Tomcat that dies under its live agent was replaced
/// only once its VM was past boot_timeout (300 s). A server that answered before and
/// stops is failed after not_serving_timeout (2 s), however young its VM.
#[test]
fn a_web_vm_whose_server_stops_answering_is_failed_after_not_serving_timeout() {
    for created in [0.0, 390.0] {
        let site = stops_serving(created);
        assert_eq!(
            site.ticks_notifying("autoscaler.vm.failed"),
            [403.0],
            "created at {created}"
        );
        // Out of the pool at once.
        let (_, at_401) = &site.log[10];
        assert!(members(&pools(at_401)[0]).is_empty(), "{at_401:?}");
        let (_, actions) = site.log.iter().find(|(at, _)| *at == 403.0).unwrap();
        let failed = &notified(actions, "autoscaler.vm.failed")[0];
        assert_eq!(failed["cause"], "not_serving");
        assert_eq!(failed["vm_name"], "w1");
        assert_eq!(deleted(actions), ["id-w1"]);
        // One VM booted in its place by then (an old VM that stops serving stops
        // counting as capacity at once: the policy may boot before health names it).
        let boots = site.web_boots();
        assert_eq!(boots.len(), 1, "created at {created}: {boots:?}");
        assert!(boots[0].0 <= 403.0, "created at {created}: {boots:?}");
    }
}

/// A web VM whose server never answered is booting (Tomcat starts after its agent on
/// some images): it fails only past boot_timeout.
#[test]
fn a_web_vm_whose_server_never_answered_fails_only_past_boot_timeout() {
    // (asked for at, failed at): 3 s (heartbeat_timeout) of not serving past 300 s.
    for (created, failed_at) in [(0.0, Some(395.0)), (390.0, None)] {
        let site = stops_serving_at(created, 391);
        assert_eq!(
            site.ticks_notifying("autoscaler.vm.failed"),
            failed_at.into_iter().collect::<Vec<_>>(),
            "created at {created}"
        );
        if failed_at.is_none() {
            // Young: still booting as far as the policy goes; it counts.
            assert!(site.log.iter().all(|(_, a)| deleted(a).is_empty()));
            assert!(site.web_boots().is_empty(), "{:?}", site.web_boots());
        }
    }
}

/// An old VM that stops serving stops counting as capacity at once, so the policy boots
/// its replacement before health declares it failed (the boot cannot name it); its name
/// must not stick to a later, unrelated boot.
#[test]
fn a_vm_that_stops_serving_leaves_no_stale_replacement_name() {
    let mut site = stops_serving(0.0);
    // Later the load calls for more VMs: that boot is a scale-out, not a replacement.
    site.booted(web("w4", VmStatus::Active, "127.0.1.14", 421.0));
    for _ in 0..10 {
        site.tick(Some(SLOW));
    }
    assert_eq!(
        site.web_boots()
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>(),
        [None, None, None],
        "{:?}",
        site.web_boots()
    );
}

#[test]
fn a_broker_reconnect_fails_nothing_during_the_grace_period() {
    // The link's start as the service reports it after the reconnect: none (the group's
    // own view) or the reconnect itself.
    for service_view in [None, Some(21.0)] {
        let mut site = Site::ready(1, &["w1"]);
        site.link_up_since = None;
        for _ in 0..9 {
            site.tick(Some(LOW));
        }
        // Outage from 11 s: nothing heard, no metrics.
        site.agents_heard = false;
        site.link_up = false;
        for _ in 0..10 {
            site.tick(None);
        }
        // Back at 21 s; the heartbeats (last at 10 s) take a moment.
        site.link_up = true;
        site.link_up_since = service_view.map(at);
        let mut grace = Vec::new();
        for _ in 0..3 {
            grace.push(site.tick(None));
        }
        for actions in &grace {
            let row = record(actions);
            assert_eq!(row.decision, "hold");
            assert!(row.reason.contains("grace period"), "{}", row.reason);
        }
        site.agents_heard = true;
        for _ in 0..20 {
            site.tick(Some(LOW));
        }
        let what = format!("{service_view:?}");
        assert!(
            site.ticks_notifying("autoscaler.vm.failed").is_empty(),
            "{what}"
        );
        assert!(
            site.log.iter().all(|(_, a)| deleted(a).is_empty()),
            "{what}"
        );
        assert!(site.web_boots().is_empty(), "{what}");
        assert!(
            site.log
                .iter()
                .flat_map(|(_, a)| pools(a))
                .all(|p| members(&p) == [("w1", MemberState::Active)]),
            "{what}: the pool is never emptied"
        );
    }
}

#[test]
fn a_restarted_conductor_adopts_the_vms_it_finds() {
    // (the link's start as the service reports it, the first heartbeats heard): settled
    // by the group's own grace period, with the agents heard at once or only within the
    // grace period (their VMs, asked for long ago, must not be taken for boots that timed
    // out), or settled at once by the service's link (up long before this group was
    // created).
    for (link_up_since, heard_from) in [(None, 0.0), (None, 2.0), (Some(-100.0), 0.0)] {
        let mut site = Site::starting(1).splitter("s", VmStatus::Active);
        for (i, name) in ["w1", "w2", "w3"].into_iter().enumerate() {
            let addr = format!("127.0.1.{}", 10 + i);
            site = site.with(web(name, VmStatus::Active, &addr, -600.0));
        }
        site.link_up_since = link_up_since.map(at);
        site.auto_ack = true;
        for t in 0..30 {
            let t = f64::from(t);
            site.agents_heard = t >= heard_from;
            site.tick_at(t, None);
        }
        let what = format!("{link_up_since:?}, heard from {heard_from}");
        assert!(site.web_boots().is_empty(), "{what}");
        assert!(
            site.log.iter().all(|(_, a)| deleted(a).is_empty()),
            "{what}"
        );
        assert!(
            site.ticks_notifying("autoscaler.scale.down").is_empty(),
            "{what}"
        );
        assert!(
            site.ticks_notifying("autoscaler.vm.failed").is_empty(),
            "{what}"
        );
        let row = record(&site.log.last().unwrap().1);
        assert_eq!((row.vms_active, row.desired), (3, 3), "{what}");
        assert_eq!(site.g.pool.members.len(), 3, "{what}");
        assert_eq!(site.g.phase, Phase::Ready, "{what}");
    }
}

#[test]
fn judge_names_each_cause() {
    let s = settings();
    let heard = Hearing {
        settled: true,
        anyone_heard: true,
    };
    let ok = VmFacts {
        status: VmStatus::Active,
        age: Duration::from_secs(400),
        heard_before: true,
        fresh: true,
        unserving_for: None,
        served_before: true,
    };
    assert_eq!(judge(&ok, heard, &s), None);
    let cases = [
        (
            VmFacts {
                status: VmStatus::Error,
                ..ok
            },
            Cause::Status,
        ),
        (VmFacts { fresh: false, ..ok }, Cause::HeartbeatLost),
        (
            VmFacts {
                status: VmStatus::Build,
                ..ok
            },
            Cause::BootTimeout,
        ),
        (
            VmFacts {
                unserving_for: Some(Duration::from_secs(2)),
                ..ok
            },
            Cause::NotServing,
        ),
        (
            VmFacts {
                unserving_for: Some(Duration::from_secs(4)),
                served_before: false,
                ..ok
            },
            Cause::NotServing,
        ),
    ];
    for (facts, cause) in cases {
        assert_eq!(judge(&facts, heard, &s), Some(cause), "{facts:?}");
    }
    // Not serving for less than not_serving_timeout, or never served and young: nothing.
    let briefly = VmFacts {
        unserving_for: Some(Duration::from_millis(1900)),
        ..ok
    };
    let booting = VmFacts {
        age: Duration::from_secs(10),
        unserving_for: Some(Duration::from_secs(60)),
        served_before: false,
        ..ok
    };
    for facts in [briefly, booting] {
        assert_eq!(judge(&facts, heard, &s), None, "{facts:?}");
    }
    // Silence while nobody is heard, or in the grace period, proves nothing.
    let silent = VmFacts { fresh: false, ..ok };
    for hearing in [
        Hearing {
            settled: false,
            anyone_heard: true,
        },
        Hearing {
            settled: true,
            anyone_heard: false,
        },
    ] {
        assert_eq!(judge(&silent, hearing, &s), None, "{hearing:?}");
    }
}
