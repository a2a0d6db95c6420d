//! The pool keeper: who is in the splitter's pool, and when the pool is sent.

use super::*;

#[test]
fn a_failed_splitter_is_replaced_and_its_successor_gets_the_pool_at_once() {
    let mut site = Site::settled(1)
        .splitter("s1", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.heard_with("s1", 0.0, Some("http://127.0.1.2:8000/"));
    site.heard("w1", 0.0);
    let first = pools(&site.tick_at(0.0, None));
    assert_eq!(first.len(), 1);
    site.ack(first[0].generation);
    site.tick_at(1.0, None);

    // The splitter's VM dies: it is deleted and a splitter boot names it.
    site.set_status("s1", VmStatus::Shutoff);
    let actions = site.tick_at(2.0, None);
    assert!(actions.contains(&Action::Delete(VmId("id-s1".into()))));
    assert!(actions.contains(&Action::Boot {
        role: Role::Splitter,
        replaces: Some("s1".into()),
    }));

    // Its successor is heard at 3.5 s: the current pool goes to it on that tick, not at
    // the next periodic resend.
    site.gone("s1");
    site.booted(vm("s2", Role::Splitter, VmStatus::Active, "127.0.1.4"));
    site.heard_with("s2", 3.5, Some("http://127.0.1.4:8000/"));
    site.heard("w1", 3.5);
    let sent = pools(&site.tick_at(3.6, None));
    assert_eq!(sent.len(), 1, "the pool at once for the new splitter");
    assert_eq!(sent[0].members.len(), 1);
    assert_eq!(sent[0].members[0].name, "w1");
    assert!(pools(&site.tick_at(4.6, None)).is_empty(), "and once only");
    assert_eq!(site.ticks_notifying("autoscaler.vm.replaced"), [2.0]);
}

#[test]
fn web_vms_join_the_pool_when_active_and_heard_and_the_site_becomes_ready() {
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("shop-web-1", VmStatus::Active);
    let url = Some("http://127.0.1.2:8000/webserver/");
    site.heard_with("s", 9.5, url);
    let first = site.tick_at(10.0, None);
    assert_eq!(
        pools(&first)[0].members,
        vec![],
        "not heard from yet: not in the pool"
    );
    assert_eq!(site.g.phase, Phase::Starting);

    site.heard("shop-web-1", 10.5);
    let second = site.tick_at(11.0, None);
    let pool = &pools(&second)[0];
    assert_eq!(pool.members.len(), 1);
    assert_eq!(pool.members[0].name, "shop_web_1");
    assert_eq!(
        (pool.members[0].host.as_str(), pool.members[0].port),
        ("127.0.1.10", AJP_PORT)
    );
    assert!(pool.listening);
    assert_eq!(
        site.g.phase,
        Phase::Starting,
        "not ready before the splitter acknowledges"
    );

    site.ack(pool.generation);
    site.heard_with("s", 11.5, url);
    site.heard("shop-web-1", 11.5);
    let third = site.tick_at(12.0, None);
    assert_eq!(site.g.phase, Phase::Ready);
    assert!(notifies(&third, "autoscaler.template.ready"));
    assert_eq!(site.g.view(at(12.0)).url.as_deref(), url);
    assert!(
        pools(&third).is_empty(),
        "acknowledged and unchanged: not resent yet"
    );
}

/// Issue 7: Nova's fake virt driver gives servers no address; the agent announces where
/// its server listens, and the pool uses that. A cloud's address wins.
#[test]
fn issue_7_a_vm_without_a_cloud_address_joins_on_its_agents_address() {
    let mut site = Site::settled(1)
        .with(vm("s", Role::Splitter, VmStatus::Active, ""))
        .with(vm("shop-web-1", Role::Web, VmStatus::Active, ""))
        .with(vm("shop-web-2", Role::Web, VmStatus::Active, "10.0.0.2"));
    site.heard_all(9.5);
    // Silent about its address: it cannot be routed to.
    let first = site.tick_at(10.0, None);
    let hosts: Vec<String> = pools(&first)[0]
        .members
        .iter()
        .map(|m| m.host.clone())
        .collect();
    assert_eq!(hosts, ["10.0.0.2"]);
    for (name, addr) in [("shop-web-1", "127.0.7.3"), ("shop-web-2", "127.0.7.4")] {
        site.heartbeats.get_mut(name).unwrap().address = addr.parse().ok();
    }
    let second = site.tick_at(10.5, None);
    let members: Vec<(String, String)> = pools(&second)[0]
        .members
        .iter()
        .map(|m| (m.name.clone(), m.host.clone()))
        .collect();
    assert_eq!(
        members,
        [
            ("shop_web_1".to_owned(), "127.0.7.3".to_owned()),
            ("shop_web_2".to_owned(), "10.0.0.2".to_owned())
        ]
    );
    let view = site.g.view(at(10.5));
    assert_eq!(view.vms[1].address.as_deref(), Some("127.0.7.3"));
}

#[test]
fn generations_grow_and_survive_a_restart() {
    let p1 = pools(&Site::settled(0).tick_at(1.0, None))[0].generation;
    let p2 = pools(&Site::settled(0).tick_at(2.0, None))[0].generation;
    assert!(p2 > p1);
}

#[test]
fn after_a_restart_or_reconnect_silence_proves_nothing_and_no_empty_pool_is_sent() {
    let mut site = Site::starting(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    // Restarted: the VMs are in the cloud, their heartbeats not heard yet.
    let actions = site.tick_at(0.0, None);
    assert!(
        actions.iter().all(|a| matches!(a, Action::Record(_))),
        "{actions:?}"
    );
    site.heard_all(0.5);
    assert!(pools(&site.tick_at(1.0, None)).is_empty(), "still settling");
    // Settled and heard: the pool is sent, with w1.
    site.heard_all(3.0);
    let pool = &pools(&site.tick_at(3.0, None))[0];
    assert_eq!(pool.members.len(), 1);
    // A broker outage: nothing heard for 10 s, but nobody is declared dead, and the pool
    // is kept while the link settles again.
    site.link_up = false;
    assert!(site
        .tick_at(13.0, None)
        .iter()
        .all(|a| !matches!(a, Action::Delete(_) | Action::Notify(_))));
    site.link_up = true;
    let actions = site.tick_at(14.0, None);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Delete(_) | Action::Notify(_))),
        "{actions:?}"
    );
    assert!(pools(&actions).iter().all(|p| p.members.len() == 1));
}

#[test]
fn a_new_owner_sends_pools_newer_than_the_last_owner_even_with_a_clock_behind() {
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    // The previous owner's clock ran an hour ahead.
    let floor = u64::try_from(at(3600.0).timestamp_millis()).unwrap();
    site.g.resume_pool_after(floor);
    site.heard_with("s", 0.0, Some("http://127.0.1.2:8000/"));
    site.heard("w1", 0.0);
    let first = pools(&site.tick_at(0.0, None));
    assert_eq!(first[0].generation, floor + 1);
}

#[test]
fn issue_16_a_booting_vm_whose_server_answers_joins_at_once() {
    // min_vms 2 and one web VM so far: the second is wanted.
    let mut site = Site::ready(2, &["w1"]);
    // w2 booting as the last tick saw it: its first serving heartbeat calls for a tick.
    site.vms
        .push(vm("w2", Role::Web, VmStatus::Build, "127.0.1.11"));
    site.tick(None);
    assert!(site.g.joins_now("w2"));
    assert!(!site.g.joins_now("w1"), "already in the pool");
    assert!(!site.g.joins_now("s"), "the splitter");
    assert!(!site.g.joins_now("nobody"));
    // Once in the pool, its heartbeats call for nothing.
    site.set_status("w2", VmStatus::Active);
    site.heard("w2", site.now + 1.0);
    site.tick(None);
    let pool = site.pool();
    assert!(
        members(&pool).contains(&(crate::pool::member_name("w2").as_str(), MemberState::Active)),
        "{pool:?}"
    );
    assert!(!site.g.joins_now("w2"));
}

#[test]
fn a_group_taken_over_sends_no_pool_before_it_hears_anyone() {
    // Another conductor's group, settled here at once (this conductor's link has long
    // been up), whose agents it has not heard yet: the splitter keeps its pool.
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    assert!(pools(&site.tick_at(1.0, None)).is_empty());
    assert!(pools(&site.tick_at(2.0, None)).is_empty());
    site.agents_heard = true;
    let sent = pools(&site.tick_at(3.0, None));
    assert_eq!(sent[0].members.len(), 1);
}
