//! Issue 14: any conductor answers the CLI. Two conductors share the request queue; a
//! request about a group that the other one owns is forwarded to the owner's own queue
//! (`<exchange>.conductor.rpc.<host>`), which answers on the caller's reply address. Asked
//! through a bare RPC client that never retries, every `template show` and
//! `vm list --template` of the group is answered by its owner, whichever conductor took it.

mod common;

use std::time::Duration;

use autoscaler::{
    conductor::api::{Request, TemplateView, VmView},
    messaging::{rpc::RpcClient, Durability, Topology},
};
use common::{
    load::{json, wait_for},
    second::SecondConductor,
    stderr, Fixture,
};

/// The host that holds `shop`'s lease, from `conductor list`.
fn owner(fx: &Fixture) -> Option<String> {
    let out = fx.manage(&["--format", "json", "conductor", "list"]);
    if !out.status.success() {
        return None;
    }
    json(&out).as_array()?.iter().find_map(|c| {
        let owns = c["groups"].as_array()?.iter().any(|g| g == "shop");
        owns.then(|| c["host"].as_str().unwrap_or_default().to_owned())
    })
}

fn log_b(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.dir.path().join("conductor-b.log")).unwrap_or_default()
}

#[test]
fn a_request_about_a_group_another_conductor_owns_is_forwarded_to_it() {
    let mut fx = Fixture::new();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    let _b = SecondConductor::start(&fx);
    wait_for("both conductors up", Duration::from_secs(20), &fx, || {
        let list = json(&fx.manage(&["--format", "json", "conductor", "list"]));
        let up = list.as_array()?.iter().filter(|c| c["up"] == true).count();
        (up == 2).then_some(())
    });
    let path = fx.template_path("shop");
    // The test image runs no agent: its site never reports ready, so no wait.
    let out = fx.manage(&[
        "--no-wait",
        "template",
        "instantiate",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The rendezvous plan may hand the group over once after it was taken: wait until the
    // same owner is seen ten times in a row.
    let mut seen = (String::new(), 0);
    let (owner, _) = wait_for("a settled owner", Duration::from_secs(30), &fx, || {
        let now = owner(&fx)?;
        seen = if now == seen.0 {
            (now, seen.1 + 1)
        } else {
            (now, 1)
        };
        (seen.1 >= 10).then(|| seen.0.clone())
    });

    // The group's first VMs are booting: wait until its owner lists one.
    wait_for("a VM of shop listed", Duration::from_secs(20), &fx, || {
        let out = fx.manage(&["--format", "json", "vm", "list", "--template", "shop"]);
        json(&out)
            .as_array()
            .is_some_and(|v| !v.is_empty())
            .then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topology = Topology::new(&fx.exchange, Durability::Transient);
    let mut client = rt
        .block_on(RpcClient::connect(
            &fx.link_config(),
            topology,
            "forwarding-test",
        ))
        .expect("an RPC client");
    let timeout = Duration::from_secs(10);
    for i in 0..10 {
        let show = Request::TemplateShow {
            name: Some("shop".to_owned()),
        };
        let views: Vec<TemplateView> = rt
            .block_on(client.call(&show, timeout))
            .unwrap_or_else(|e| panic!("template show #{i}: {e}\n{}", fx.conductor_log()));
        assert_eq!(views.len(), 1);
        assert!(
            views[0].status.is_some(),
            "template show #{i} was answered without the owner's live view"
        );
        let list = Request::VmList {
            template: Some("shop".to_owned()),
        };
        let vms: Vec<VmView> = rt
            .block_on(client.call(&list, timeout))
            .unwrap_or_else(|e| panic!("vm list #{i}: {e}\n{}", fx.conductor_log()));
        assert!(!vms.is_empty(), "vm list #{i} is empty");
    }
    // The queue hands requests to both conductors in turn: the other one forwarded some.
    let other_log = if owner == fx.host {
        log_b(&fx)
    } else {
        fx.conductor_log()
    };
    let forwarded = other_log.matches("request forwarded").count();
    eprintln!("owner {owner}; the other conductor forwarded {forwarded} of 20 requests");
    assert!(forwarded > 0, "nothing was forwarded:\n{other_log}");
}
