//! Two conductors on one database, one broker and one local cloud (each with its own
//! `[DEFAULT] host` and `[local] address_pool`): kill -9 of the one that owns a site under
//! load. The other takes the group once its lease expires (within the lease time + 2 s),
//! adopts its VMs from the cloud (no duplicate boot, no orphan), carries the pending
//! `vm delete` on, and goes on scaling; ab sees no failed request.
//!
//! The site: 4-thread Tomcats whose page takes 50 ms (80 requests a second each), a 0.2 s
//! target, `min_vms = 2`: 4 clients hold it at 2, 40 need 3.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use autoscaler::{
    conductor::timeseries::read_rows,
    store::{DatabaseUrl, PoolSettings, Store},
};
use chrono::Utc;
use common::{
    load::{ab_for, ab_result, install_webtier, json, repo_images, wait_for},
    second::SecondConductor,
    stderr, stdout, Fixture,
};

const LEASE: Duration = Duration::from_secs(10);

const TEMPLATE: &str = "[template]\nname = site\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
    min_vms = 2\nmax_vms = 4\ntarget_response_time = 0.2\nweb_service_time_ms = 50\nweb_threads = 4\n";

fn logs(fx: &Fixture) -> String {
    let b = std::fs::read_to_string(fx.dir.path().join("conductor-b.log")).unwrap_or_default();
    format!(
        "--- conductor A ---\n{}\n--- conductor B ---\n{b}",
        fx.conductor_log()
    )
}

/// The host that holds `site`'s lease, from `conductor list`.
fn owner(fx: &Fixture) -> Option<String> {
    let out = fx.manage(&["--format", "json", "conductor", "list"]);
    if !out.status.success() {
        return None;
    }
    json(&out).as_array()?.iter().find_map(|c| {
        let owns = c["groups"].as_array()?.iter().any(|g| g == "site");
        owns.then(|| c["host"].as_str().unwrap_or_default().to_owned())
    })
}

/// The site's web VMs in the local cloud (the records on disk), by name.
fn cloud_webs(fx: &Fixture) -> Vec<String> {
    let mut names = Vec::new();
    let dir = fx.dir.path().join("state/local/vms");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("vm.json")) else {
            continue;
        };
        let record: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let name = record["name"].as_str().unwrap_or_default();
        if name.starts_with("site-web-") {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names
}

async fn pending_removals(fx: &Fixture) -> Vec<String> {
    let url = DatabaseUrl::Sqlite {
        path: fx.dir.path().join("state/autoscaler.sqlite"),
    };
    let store = Store::connect(&url, &PoolSettings::default())
        .await
        .unwrap();
    let removals = store.removals("site").await.unwrap();
    store.close().await;
    removals.into_iter().map(|r| r.vm).collect()
}

#[test]
fn kill_9_of_the_owner_under_load_another_conductor_takes_over_without_a_failed_request() {
    install_webtier();
    let mut fx = Fixture::new();
    fx.images_path = repo_images();
    fx.write_config("[conductor]\ndrain_timeout = 30\n");
    std::fs::write(fx.template_path("site"), TEMPLATE).unwrap();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    let mut b = SecondConductor::start(&fx);
    wait_for("both conductors up", Duration::from_secs(20), &fx, || {
        let out = fx.manage(&["--format", "json", "conductor", "list"]);
        let list = json(&out);
        let up = list.as_array()?.iter().filter(|c| c["up"] == true).count();
        (up == 2).then_some(())
    });

    let path = fx.template_path("site");
    let out = fx.manage(&["template", "instantiate", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), logs(&fx));
    let url = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("site ready: "))
        .unwrap_or_else(|| panic!("no URL in {}", stdout(&out)))
        .to_owned();
    let page = format!("{}index.jsp", url.trim_end_matches("index.jsp"));
    // The plan may hand the group over once after it was taken: wait until it stays put.
    let (first_owner, _) = wait_for("an owner", Duration::from_secs(20), &fx, || owner(&fx));
    std::thread::sleep(Duration::from_secs(3));
    let owner_before = owner(&fx).unwrap_or(first_owner);
    let (_, _) = wait_for("2 web VMs", Duration::from_secs(60), &fx, || {
        (cloud_webs(&fx).len() == 2).then_some(())
    });

    // Only the owner hears the site (issue 14): its telemetry queue alone is bound with
    // the site's keys.
    let other = if owner_before == fx.host {
        b.host.clone()
    } else {
        fx.host.clone()
    };
    let keys = ["heartbeat.site.*", "metrics.site", "pool-ack.site"].map(String::from);
    wait_for("only the owner bound", Duration::from_secs(10), &fx, || {
        let (owner_keys, other_keys) = (
            fx.telemetry_bindings(&owner_before),
            fx.telemetry_bindings(&other),
        );
        (keys.iter().all(|k| owner_keys.contains(k)) && other_keys.is_empty()).then_some(())
    });

    let low = ab_for(&page, 120, 4);
    std::thread::sleep(Duration::from_secs(5));
    let webs_before = cloud_webs(&fx);
    // Whichever conductor takes the request, the owner carries it out (the other forwards
    // it: doc/ha.md).
    let leaving = webs_before[0].clone();
    let out = fx.manage(&["--no-wait", "vm", "delete", &leaving]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), logs(&fx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(pending_removals(&fx)),
        std::slice::from_ref(&leaving)
    );

    // kill -9 of the owner, the removal still pending.
    let killed = Instant::now();
    let killed_at = Utc::now();
    let survivor = if owner_before == fx.host {
        common::signal(fx.conductor_pid(), "KILL");
        b.host.clone()
    } else {
        let mut child = b.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        fx.host.clone()
    };
    let (_, takeover) = wait_for("the takeover", LEASE * 3, &fx, || {
        (owner(&fx).as_deref() == Some(survivor.as_str())).then_some(())
    });
    eprintln!(
        "owner {owner_before} killed; {survivor} took the group {:.1} s later (lease {} s)",
        takeover.as_secs_f64(),
        LEASE.as_secs()
    );
    assert!(
        takeover <= LEASE + Duration::from_secs(2),
        "takeover after {takeover:?}\n{}",
        logs(&fx)
    );
    let (_, bound) = wait_for("the survivor bound", Duration::from_secs(5), &fx, || {
        let survivor_keys = fx.telemetry_bindings(&survivor);
        keys.iter().all(|k| survivor_keys.contains(k)).then_some(())
    });
    eprintln!("the survivor's telemetry queue bound with the site's keys {bound:?} after it held the lease");

    // The pending removal is carried on: the VM drains and goes, a replacement keeps the
    // minimum, and nothing else is booted or left behind.
    let (_, removed) = wait_for(
        "the removal carried on",
        Duration::from_secs(60),
        &fx,
        || {
            let webs = cloud_webs(&fx);
            (!webs.contains(&leaving) && webs.len() == 2).then_some(())
        },
    );
    eprintln!(
        "{leaving} drained and deleted {:.1} s after the takeover ({:.1} s after the kill)",
        removed.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // The delete's answer reaches the conductor just after the VM's directory is gone.
    wait_for(
        "the removal finished in the database",
        Duration::from_secs(10),
        &fx,
        || rt.block_on(pending_removals(&fx)).is_empty().then_some(()),
    );
    let kept = webs_before.iter().find(|w| **w != leaving).unwrap();
    assert!(cloud_webs(&fx).contains(kept), "adopted, not replaced");

    // It goes on scaling: 36 more clients need a third VM.
    let high_start = Utc::now();
    let high = ab_for(&page, 40, 36);
    let high = ab_result(high);
    let low = ab_result(low);
    let rows = read_rows(&fx.dir.path().join("state/timeseries/site.csv")).unwrap();
    let scaled = rows
        .iter()
        .find(|r| r.time >= high_start && r.decision == "scale_out");
    eprintln!(
        "after the takeover: scale-out {:?} s after the load rose",
        scaled.map(|r| (r.time - high_start).num_milliseconds() as f64 / 1000.0)
    );
    assert!(
        scaled.is_some(),
        "no scale-out after the takeover\n{}",
        logs(&fx)
    );
    let most = rows
        .iter()
        .filter(|r| r.time >= killed_at)
        .map(|r| r.vms_booting + r.vms_active + r.vms_draining)
        .max()
        .unwrap_or(0);
    assert!(most <= 4, "over max_vms after the takeover: {most}");
    low.assert_no_failures("4 clients through kill -9 and takeover");
    high.assert_no_failures("36 clients after the takeover");
    drop(b);
    // The second conductor's telemetry queue (the fixture deletes the first's); already
    // gone when the broker deleted it with its connection.
    let _ = Command::new("rabbitmqctl")
        .args([
            "delete_queue",
            &format!("{}.conductor.telemetry.{}-b", fx.exchange, fx.host),
        ])
        .output();
}
