//! The whole site on the real Nova of `tools/nova-fixture` (issue 7): the conductor with
//! `[compute] driver = nova` boots Nova servers through the real compute API, the stand-in
//! hypervisor of `tests/common/nova.rs` runs each `ACTIVE` server's software (the
//! repository's tomcat-web and modjk-splitter images, with the server's user data read as
//! admin), the agents talk to the conductor over the real RabbitMQ, and ab loads the site:
//! conductor → Nova → VM software → agent → RabbitMQ → conductor, end to end.
//!
//! One test, in phases, each needing the site of the one before: instantiate (and time it
//! to serving), a killed VM replaced through Nova, a conductor killed with -9 and restarted
//! without its state file (Nova as the source of truth: same servers, no duplicate, no
//! orphan), scale-out under load, destroy (timed to the last 404). Figures are printed
//! (`-- --nocapture`); time bounds are loose for a loaded 2-core machine.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{
    load::{ab_for, ab_result, install_webtier, instantiate_site, json, repo_images, wait_for},
    nova::{Cleanup, Hypervisor, HypervisorSetup, NovaFixture, FLAVOR},
    signal, Fixture,
};

fn show(fx: &Fixture) -> serde_json::Value {
    json(&fx.manage(&["--format", "json", "template", "show", "site"]))[0].clone()
}

/// `(name, id)` of the web VMs in the splitter's pool.
fn web_in_pool(view: &serde_json::Value) -> Vec<(String, String)> {
    view["status"]["vms"]
        .as_array()
        .map(|vms| {
            vms.iter()
                .filter(|v| v["in_pool"] == true && v["role"] == "web")
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        v["id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of the project's servers as Nova lists them (admin).
fn server_ids(nova: &NovaFixture) -> BTreeSet<String> {
    nova.servers()
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// One GET of the site's page; whether it answered 200.
fn page_ok(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut stream) = TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut response = Vec::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_end(&mut response).is_ok()
        && response.starts_with(b"HTTP/1.1 200")
}

#[test]
fn issue_7_a_site_on_nova_serves_replaces_a_killed_vm_survives_a_restart_scales_and_is_destroyed() {
    let nova = NovaFixture::new();
    install_webtier();
    nova.ensure_flavor();
    nova.ensure_images(&["tomcat-web", "modjk-splitter"]);
    let _cleanup = Cleanup(nova.clone());
    let images = repo_images();
    let hypervisor = Hypervisor::start(HypervisorSetup {
        fixture: nova.clone(),
        images: [
            ("tomcat-web".to_owned(), images.join("tomcat-web")),
            ("modjk-splitter".to_owned(), images.join("modjk-splitter")),
        ]
        .into(),
        agent: std::path::Path::new(env!("CARGO_BIN_EXE_autoscaler-conductor"))
            .with_file_name("autoscaler-agent"),
    });

    let mut fx = Fixture::new();
    fx.images_path = images;
    fx.write_config(&format!(
        "[conductor]\ndrain_timeout = 30\n\n{}",
        nova.config()
    ));
    let template = format!(
        "[template]\nname = site\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
         flavor = {FLAVOR}\nnetwork = none\nmin_vms = 2\nmax_vms = 3\n\
         target_response_time = 0.2\nweb_service_time_ms = 50\nweb_threads = 4\n"
    );
    std::fs::write(fx.template_path("site"), template).unwrap();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));

    // 1. Instantiate: three Nova servers (splitter + 2 web), the site serves.
    let (url, took) = instantiate_site(&fx);
    eprintln!("NOVA instantiate -> site serving: {took:?} ({url})");
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert!(page_ok(&url), "the site answers");
    let (pool, _) = wait_for(
        "two web VMs in the pool",
        Duration::from_secs(60),
        &fx,
        || {
            let pool = web_in_pool(&show(&fx));
            (pool.len() == 2).then_some(pool)
        },
    );
    assert_eq!(server_ids(&nova).len(), 3, "{:?}", hypervisor.last_error());
    for (_, id) in &pool {
        assert!(
            hypervisor.running(id),
            "the hypervisor runs every pool member"
        );
    }

    // 2. A killed VM (processes killed, server SHUTOFF as a dead hypervisor shows it) is
    // deleted and replaced through Nova.
    let (victim_name, victim) = pool[0].clone();
    let survivor = pool[1].0.clone();
    hypervisor.crash(&victim);
    let (replacement, took) = wait_for(
        "the killed VM replaced through Nova",
        Duration::from_secs(90),
        &fx,
        || {
            let pool = web_in_pool(&show(&fx));
            let gone = !server_ids(&nova).contains(&victim);
            let newcomer = pool
                .iter()
                .find(|(name, _)| *name != victim_name && *name != survivor)
                .map(|(name, _)| name.clone());
            (gone && pool.len() == 2).then_some(newcomer).flatten()
        },
    );
    eprintln!("NOVA killed VM {victim_name} replaced by {replacement} in the pool after {took:?}");
    assert!(page_ok(&url));

    // 3. Restart recovery with Nova as the source of truth: kill -9 the conductor, lose
    // its database, start it again. It adopts the group from the servers' metadata and
    // keeps exactly the servers there are: no duplicate boot, no orphan.
    let before = server_ids(&nova);
    signal(fx.conductor_pid(), "KILL");
    // Its database is lost (recreated empty by `db sync`): the servers carry the template.
    std::fs::remove_file(fx.dir.path().join("state/autoscaler.sqlite")).unwrap();
    for wal in ["state/autoscaler.sqlite-wal", "state/autoscaler.sqlite-shm"] {
        let _ = std::fs::remove_file(fx.dir.path().join(wal));
    }
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    let (_, took) = wait_for(
        "the restarted conductor shows the adopted site with its two web VMs in the pool",
        Duration::from_secs(60),
        &fx,
        || (web_in_pool(&show(&fx)).len() == 2).then_some(()),
    );
    eprintln!("NOVA restarted conductor has the pool back after {took:?}");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(server_ids(&nova), before, "same servers after the restart");
    let listed: BTreeSet<String> = show(&fx)["status"]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        listed, before,
        "the conductor knows every server, no orphan"
    );
    assert!(page_ok(&url));

    // 4. Scale out under load: 36 clients need 3 VMs of 80 requests a second.
    let page = format!("{}index.jsp", url.trim_end_matches("index.jsp"));
    let load = ab_for(&page, 40, 36);
    let (_, took) = wait_for(
        "a third web VM in the pool",
        Duration::from_secs(60),
        &fx,
        || (web_in_pool(&show(&fx)).len() == 3).then_some(()),
    );
    eprintln!("NOVA scaled out to 3 web VMs {took:?} after the load began");
    assert_eq!(server_ids(&nova).len(), 4);
    let result = ab_result(load);
    eprintln!(
        "NOVA ab during scale-out: {} complete, {} failed, {} non-2xx",
        result.complete, result.failed, result.non_2xx
    );
    assert!(result.complete > 0);
    assert_eq!((result.failed, result.non_2xx), (0, 0));

    // 5. Destroy: every server deleted through Nova.
    let start = Instant::now();
    let out = fx.manage(&["template", "destroy", "site"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let (_, took) = wait_for(
        "every server gone from Nova",
        Duration::from_secs(90),
        &fx,
        || server_ids(&nova).is_empty().then_some(()),
    );
    eprintln!(
        "NOVA destroy -> every server 404: {:?} (of which the destroy command {:?})",
        start.elapsed(),
        start.elapsed() - took
    );
    let (_, _) = wait_for(
        "the hypervisor runs nothing",
        Duration::from_secs(10),
        &fx,
        || hypervisor.running_ids().is_empty().then_some(()),
    );
    fx.stop_conductor(Duration::from_secs(20));
}

/// Issue 7: a boot Nova cannot do (here an unknown flavor) reaches the operator as an
/// `autoscaler.vm.boot_failed` error notification naming the cause, is retried with
/// backoff, and leaves nothing behind in Nova.
#[test]
fn issue_7_a_boot_nova_refuses_is_a_boot_failed_notification_and_leaves_nothing() {
    let nova = NovaFixture::new();
    nova.ensure_flavor();
    nova.ensure_images(&["tomcat-web", "modjk-splitter"]);
    let _cleanup = Cleanup(nova.clone());
    let mut fx = Fixture::new();
    fx.write_config(&nova.config());
    let template = "[template]\nname = shop\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
         flavor = no-such-flavor\nnetwork = none\nmin_vms = 1\nmax_vms = 2\n\
         target_response_time = 0.2\n";
    std::fs::write(fx.template_path("shop"), template).unwrap();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    fx.instantiate("shop");
    let notification = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fx.next_notification(
            "error",
            "autoscaler.vm.boot_failed",
            Duration::from_secs(20),
        ));
    let error = notification.payload["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("unknown flavor \"no-such-flavor\": Nova has no flavor"),
        "{}",
        notification.payload
    );
    assert!(error.contains(FLAVOR), "{error}");
    assert_eq!(notification.payload["retryable"], false);
    assert_eq!(notification.payload["template"], "shop");
    std::thread::sleep(Duration::from_secs(3));
    assert!(nova.servers().is_empty(), "nothing left behind in Nova");
    assert!(fx.conductor_log().contains("retry_in_s="), "backoff");
    fx.stop_conductor(Duration::from_secs(20));
}
