//! Faults at the limits of the health model (issue 16), each on the real local cloud:
//! RabbitMQ, the conductor, Apache httpd + mod_jk and Tomcat 10 VMs from the repository's
//! images. Every figure is printed (`cargo test -p autoscaler --test faults --
//! --nocapture --test-threads=1`) and written down in doc/health.md; the bounds asserted
//! are the issue's, with some slack for a loaded 2-core machine.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    load::{conductor_on_real_images, instantiate_site, json, wait_for},
    Fixture,
};

/// The group's VMs as `template show` reports them.
fn vms(fx: &Fixture) -> Vec<serde_json::Value> {
    let view = json(&fx.manage(&["--format", "json", "template", "show", "site"]));
    view[0]["status"]["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn web_vms(fx: &Fixture) -> Vec<serde_json::Value> {
    vms(fx).into_iter().filter(|v| v["role"] == "web").collect()
}

fn name(vm: &serde_json::Value) -> String {
    vm["name"].as_str().unwrap_or_default().to_owned()
}

/// A local VM's directory.
fn vm_dir(fx: &Fixture, id: &str) -> std::path::PathBuf {
    fx.dir.path().join("state/local/vms").join(id)
}

/// The PID of the Tomcat of web VM `id`, as its boot script logged it.
fn tomcat_pid(fx: &Fixture, id: &str) -> u32 {
    let console = std::fs::read_to_string(vm_dir(fx, id).join("console.log")).unwrap();
    console
        .lines()
        .find_map(|l| l.split("Tomcat started, pid ").nth(1))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Tomcat PID in the console:\n{console}"))
}

/// What our own clients saw: answered 200, answered otherwise, broken or refused.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// `clients` threads sending GETs of `path` to `addr`, one connection each, until `stop`.
fn run_clients(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, tally, path) = (stop.clone(), tally.clone(), path.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = get_ok(addr, &path);
                    let counter = if ok { &tally.ok } else { &tally.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect()
}

/// Whether one GET (HTTP/1.0, 5 s patience: the pages here take at most 1.5 s) is
/// answered 200.
fn get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = Vec::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_end(&mut response).is_ok()
        && (response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200"))
}

/// The site's address and page path from its URL.
fn addr_and_path(url: &str) -> (SocketAddr, String) {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').unwrap();
    (authority.parse().unwrap(), format!("/{path}"))
}

/// Issue 16, item 1: a Tomcat killed under its live agent (kill -9 of the Tomcat's PID
/// only) was replaced only once its VM was past boot_timeout (300 s); now within 5 s.
/// And a page slower than the agent's old 1 s check (1.5 s here) still joins the pool:
/// the check's timeout follows the template's target (5 × 1 s).
#[test]
fn issue_16_a_dead_tomcat_under_a_live_agent_is_replaced_within_5_s() {
    let template = "[template]\nname = site\nimage = tomcat-web\nmin_vms = 2\nmax_vms = 2\ntarget_response_time = 1\nweb_service_time_ms = 1500\nweb_threads = 4\n";
    let fx = conductor_on_real_images(template, "");

    // Both 1.5 s pages join the pool.
    let (url, ready) = instantiate_site(&fx);
    let (_, joined) = wait_for(
        "both web VMs in the pool",
        Duration::from_secs(60),
        &fx,
        || {
            let webs = web_vms(&fx);
            (webs.len() == 2 && webs.iter().all(|v| v["in_pool"] == true)).then_some(())
        },
    );
    eprintln!("site ready after {ready:?}, both 1.5 s pages in the pool {joined:?} later");

    let (addr, path) = addr_and_path(&url);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = run_clients(addr, &path, 4, stop.clone(), tally.clone());
    std::thread::sleep(Duration::from_secs(3));

    let before: Vec<String> = web_vms(&fx).iter().map(name).collect();
    let victim = web_vms(&fx)[0].clone();
    let victim_name = name(&victim);
    let pid = tomcat_pid(&fx, victim["id"].as_str().unwrap());
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    common::signal(pid, "KILL");

    let (_, out_of_pool) = wait_for(
        "the victim leaves the pool",
        Duration::from_secs(10),
        &fx,
        || {
            let webs = web_vms(&fx);
            webs.iter()
                .all(|v| name(v) != victim_name || v["in_pool"] == false)
                .then_some(())
        },
    );
    let _ = out_of_pool;
    let out_of_pool = killed.elapsed();
    let (newcomer, _) = wait_for(
        "a replacement is asked for",
        Duration::from_secs(30),
        &fx,
        || {
            web_vms(&fx)
                .into_iter()
                .map(|v| name(&v))
                .find(|n| !before.contains(n))
        },
    );
    let replaced = killed.elapsed();
    let (_, _) = wait_for(
        "the replacement is up",
        Duration::from_secs(60),
        &fx,
        || {
            web_vms(&fx)
                .iter()
                .any(|v| name(v) == newcomer && v["status"] == "ACTIVE")
                .then_some(())
        },
    );
    let booted = killed.elapsed();
    let (_, _) = wait_for(
        "the replacement joins the pool",
        Duration::from_secs(30),
        &fx,
        || {
            let webs = web_vms(&fx);
            let gone = webs.iter().all(|v| name(v) != victim_name);
            let joined = webs
                .iter()
                .any(|v| name(v) == newcomer && v["in_pool"] == true);
            (gone && joined).then_some(())
        },
    );
    let in_pool = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "Tomcat killed: out of the pool {out_of_pool:?}, replacement asked for {replaced:?}, \
         up {booted:?}, in the pool {in_pool:?} after the kill; requests: {ok} ok, {failed} failed"
    );
    // The conductor's own time of the replacement's boot (the CLI polls above see it a
    // little later).
    let log = fx.conductor_log();
    assert!(log.contains("not_serving"), "failed as not serving:\n{log}");
    let boot_asked = log
        .lines()
        .filter(|l| l.contains("booting a VM") && l.contains("role=web"))
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .parse::<chrono::DateTime<chrono::Utc>>()
                .ok()
        })
        .find(|t| *t > killed_at)
        .expect("the replacement's boot in the conductor's log");
    let boot_asked = (boot_asked - killed_at).to_std().unwrap_or_default();
    eprintln!("replacement's boot asked for {boot_asked:?} after the kill (conductor log)");
    assert!(
        boot_asked <= Duration::from_secs(5),
        "replacement asked for {boot_asked:?} after the kill"
    );
    assert!(ok > 0);
}

/// When each line of the conductor's log containing every one of `words` was written,
/// after `since`, as seconds after `since`.
fn logged_after(log: &str, words: &[&str], since: chrono::DateTime<chrono::Utc>) -> Vec<f64> {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .parse::<chrono::DateTime<chrono::Utc>>()
                .ok()
        })
        .filter(|t| *t > since)
        .map(|t| (t - since).num_milliseconds() as f64 / 1000.0)
        .collect()
}

/// Issue 16, item 6: a killed splitter (kill -9 of its whole process group: Apache and
/// its agent) is replaced on the same address; every request meanwhile fails. Measures
/// the outage as a client sees it (one GET after another) and where the time goes.
#[test]
fn issue_16_a_killed_splitter_outage_is_measured() {
    let template = "[template]\nname = site\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 1\ntarget_response_time = 0.5\nweb_service_time_ms = 10\n";
    let fx = conductor_on_real_images(template, "");
    let (url, _) = instantiate_site(&fx);
    let (addr, path) = addr_and_path(&url);

    // One client, one GET after another, each outcome timed.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::<(Instant, bool)>::new()));
    let client = {
        let (stop, outcomes, path) = (stop.clone(), outcomes.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = get_ok(addr, &path);
                outcomes.lock().unwrap().push((Instant::now(), ok));
                if !ok {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let splitter = vms(&fx)
        .into_iter()
        .find(|v| v["role"] == "splitter")
        .expect("a splitter");
    let old_id = splitter["id"].as_str().unwrap().to_owned();
    let pgid = common::load::vm_pgid(&fx, &old_id);
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    common::signal_group(pgid, "KILL");
    let (_, back) = wait_for(
        "the site answers again",
        Duration::from_secs(60),
        &fx,
        || {
            let outcomes = outcomes.lock().unwrap();
            let failed = outcomes.iter().position(|(t, ok)| *t > killed && !*ok)?;
            outcomes[failed..].iter().any(|(_, ok)| *ok).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let outcomes = outcomes.lock().unwrap().clone();
    let last_ok_before = outcomes
        .iter()
        .filter(|(t, ok)| *t <= killed && *ok)
        .count();
    // A request may still complete right after the kill: the outage starts with the first
    // failure and ends with the first 200 after it.
    let first_failure = outcomes
        .iter()
        .find(|(t, ok)| *t > killed && !*ok)
        .map(|(t, _)| *t)
        .expect("a failure after the kill");
    let first_ok_after = outcomes
        .iter()
        .find(|(t, ok)| *t > first_failure && *ok)
        .map(|(t, _)| *t - killed)
        .unwrap();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    let new = vms(&fx)
        .into_iter()
        .find(|v| v["role"] == "splitter")
        .expect("a new splitter");
    assert_ne!(new["id"].as_str().unwrap(), old_id);
    assert_eq!(new["address"], splitter["address"], "the same address");

    let log = fx.conductor_log();
    let at = |words: &[&str]| {
        logged_after(&log, words, killed_at)
            .first()
            .copied()
            .unwrap_or(f64::NAN)
    };
    let failed_at = at(&["autoscaler.vm.failed", "splitter"]);
    let boot_at = at(&["booting a VM", "role=splitter"]);
    // The first pool sent after the new splitter was asked for (earlier ones were
    // resends to the dead one).
    let pool_at = logged_after(&log, &["pool sent to the splitter"], killed_at)
        .into_iter()
        .find(|t| *t > boot_at)
        .unwrap_or(f64::NAN);
    let console =
        std::fs::read_to_string(vm_dir(&fx, new["id"].as_str().unwrap()).join("console.log"))
            .unwrap_or_default();
    // The boot script's steps, and the agent's lines about the pool (UTC times).
    let boot_steps: Vec<&str> = console
        .lines()
        .filter(|l| l.contains(" boot[") || l.contains("pool") || l.contains("generation"))
        .collect();
    eprintln!(
        "splitter killed at {killed_at}: outage {first_ok_after:?} (from the kill to the first 200 after the first failure; the site \
         answered again {back:?} after, as polled), {failed} requests failed, {last_ok_before} ok \
         before; conductor: failed at {failed_at} s, new splitter asked for at {boot_at} s, \
         pool sent at {pool_at} s after the kill; the new splitter's boot:\n{}",
        boot_steps.join("\n")
    );
    assert!(failed > 0, "requests fail while no splitter listens");
    assert!(
        first_ok_after < Duration::from_secs(10),
        "outage {first_ok_after:?}"
    );
}
