//! Several sites at once on the real local cloud: one conductor, three templates, each its
//! own group with its own splitter (Apache + mod_jk) and Tomcat web VMs, each scaling on
//! its own load. ab drives each site; no request may fail.
//!
//! The web VMs are 4-thread Tomcats whose page takes 50 ms (80 requests a second each);
//! with a 0.2 s target, 24 clients need 2 VMs (0.15 s) where 1 gives 0.3 s, and 4 need 1.
//! At most 2 web VMs per site keeps the JVMs on this 2-core machine at 6.

mod common;

use std::time::Duration;

use autoscaler::conductor::timeseries::{read_rows, Row};
use chrono::{DateTime, Utc};
use common::{
    load::{ab_for, ab_result, install_webtier, instantiate, json, repo_images},
    stderr, Fixture,
};

const SITES: [&str; 3] = ["alpha", "beta", "gamma"];

fn template(name: &str) -> String {
    format!(
        "[template]\nname = {name}\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
         min_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n\
         web_service_time_ms = 50\nweb_threads = 4\n"
    )
}

/// Instantiates `name`, followed until its site answers; its page.
fn start(fx: &Fixture, name: &str) -> String {
    std::fs::write(fx.template_path(name), template(name)).unwrap();
    let (url, _) = instantiate(fx, name);
    format!("{}index.jsp", url.trim_end_matches("index.jsp"))
}

fn rows(fx: &Fixture, name: &str) -> Vec<Row> {
    read_rows(&fx.dir.path().join(format!("state/timeseries/{name}.csv"))).expect("time series")
}

/// The first scale-out of `rows` in [from, to).
fn scale_out(rows: &[Row], from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
    rows.iter()
        .find(|r| r.time >= from && r.time < to && r.decision == "scale_out")
        .map(|r| r.time)
}

#[test]
fn three_sites_scale_each_on_its_own_load_without_a_failed_request() {
    install_webtier();
    let mut fx = Fixture::new();
    fx.images_path = repo_images();
    // 3 splitters and up to 6 web VMs: a /27 of the fixture's network.
    fx.address_pool = fx.address_pool.replace("/28", "/27");
    fx.write_config("[conductor]\ndrain_timeout = 30\n");
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    let pages: Vec<String> = SITES.iter().map(|name| start(&fx, name)).collect();

    let listed = json(&fx.manage(&["--format", "json", "template", "list"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, SITES, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["phase"] == "ready"),
        "{listed}"
    );

    // alpha: 24 clients for 100 s; beta: 4 all along; gamma: 4 for 45 s, then 24.
    let start_time = Utc::now();
    let alpha = ab_for(&pages[0], 100, 24);
    let beta = ab_for(&pages[1], 100, 4);
    let gamma_low = ab_for(&pages[2], 45, 4);
    let gamma_low = ab_result(gamma_low);
    let gamma_high_start = Utc::now();
    let gamma_high = ab_for(&pages[2], 55, 24);
    let (alpha, beta, gamma_high) = (ab_result(alpha), ab_result(beta), ab_result(gamma_high));
    let end = Utc::now();

    let since = |t: DateTime<Utc>| (t - start_time).num_milliseconds() as f64 / 1000.0;
    let alpha_out = scale_out(&rows(&fx, "alpha"), start_time, end);
    let beta_out = scale_out(&rows(&fx, "beta"), start_time, end);
    let gamma_early = scale_out(&rows(&fx, "gamma"), start_time, gamma_high_start);
    let gamma_out = scale_out(&rows(&fx, "gamma"), gamma_high_start, end);
    eprintln!(
        "scale-outs after the load started: alpha {:?} s, beta {:?} s, gamma {:?} s \
         (its load rose at {:.1} s)",
        alpha_out.map(since),
        beta_out.map(since),
        gamma_out.map(since),
        since(gamma_high_start)
    );
    let log = fx.conductor_log();
    assert!(alpha_out.is_some(), "alpha never scaled out\n{log}");
    assert!(beta_out.is_none(), "beta scaled out under 4 clients\n{log}");
    assert!(
        gamma_early.is_none(),
        "gamma scaled out before its load rose\n{log}"
    );
    assert!(gamma_out.is_some(), "gamma never scaled out\n{log}");
    for name in SITES {
        let rows = rows(&fx, name);
        let most = rows
            .iter()
            .map(|r| r.vms_booting + r.vms_active + r.vms_draining)
            .max();
        assert!(most <= Some(2), "{name} over its max: {most:?}");
    }

    alpha.assert_no_failures("alpha");
    beta.assert_no_failures("beta");
    gamma_low.assert_no_failures("gamma (low)");
    gamma_high.assert_no_failures("gamma (high)");

    // `vm list --template` shows one site's VMs only.
    let vms = json(&fx.manage(&["--format", "json", "vm", "list", "--template", "beta"]));
    let vms = vms.as_array().unwrap();
    assert!(
        !vms.is_empty() && vms.iter().all(|v| v["group"] == "beta"),
        "{vms:?}"
    );

    // Destroying one site leaves the others serving.
    let out = fx.manage(&["template", "destroy", "beta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = ab_result(ab_for(&pages[0], 3, 2));
    after.assert_no_failures("alpha after beta's destroy");
    let listed = json(&fx.manage(&["--format", "json", "template", "list"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}
