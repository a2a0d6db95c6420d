//! Issue 15: a stock oslo.messaging notification listener (`tools/oslo-listener`: the
//! real library from PyPI in a virtual environment the script makes, every oslo option
//! at its default, so `amqp_durable_queues = false`) reads every event type the conductor
//! emits, from a real site on the local cloud (the repository's Apache + mod_jk and
//! Tomcat images, their agents, ab): each event is caused the way an operator meets it,
//! none is published by the test.
//!
//! The listener's output is printed (`cargo test --test oslo_listener -- --nocapture`).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    load::{ab_for, ab_result, install_webtier, instantiate_site, json, repo_images, vm_pgid},
    signal, signal_group, stderr, stdout, Fixture,
};

/// Every event type the conductor emits, with its priority (`doc/messaging.md`;
/// `vm.failed` is WARN unless its `cause` is `status`).
const EVENTS: [(&str, &str); 11] = [
    ("autoscaler.template.instantiated", "INFO"),
    ("autoscaler.template.ready", "INFO"),
    ("autoscaler.template.destroy.start", "INFO"),
    ("autoscaler.template.destroyed", "INFO"),
    ("autoscaler.scale.up", "INFO"),
    ("autoscaler.scale.down", "INFO"),
    ("autoscaler.vm.delete.start", "INFO"),
    ("autoscaler.vm.failed", "ERROR"),
    ("autoscaler.vm.replaced", "INFO"),
    ("autoscaler.vm.boot_failed", "ERROR"),
    ("autoscaler.pool.rejected", "ERROR"),
];

/// The first start makes the virtual environment (pip from PyPI: about 15 s here).
const LISTENER_START: Duration = Duration::from_secs(300);

/// `tools/oslo-listener/run` on this fixture's broker, exchange and topic; its standard
/// output (one JSON object a notification) and error go to files in the fixture's folder.
struct Listener {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Listener {
    fn start(fx: &Fixture) -> Listener {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/oslo-listener/run");
        let (out, err) = (
            fx.dir.path().join("listener.out"),
            fx.dir.path().join("listener.err"),
        );
        let child = Command::new(script)
            .args(["--url", &fx.transport_url])
            .args(["--exchange", &fx.exchange])
            .args(["--topic", &fx.topic])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("listener output file"))
            .stderr(std::fs::File::create(&err).expect("listener error file"))
            .spawn()
            .expect("start tools/oslo-listener/run");
        let mut listener = Listener { child, out, err };
        let start = Instant::now();
        while !listener.output().contains("READY ") {
            if let Some(status) = listener.child.try_wait().expect("the listener's status") {
                panic!(
                    "the oslo.messaging listener exited ({status}) before it was ready:\n{}",
                    listener.errors()
                );
            }
            assert!(
                start.elapsed() < LISTENER_START,
                "the listener was not ready within {LISTENER_START:?}:\n{}",
                listener.errors()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        listener
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The notifications printed so far.
    fn notifications(&self) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The first notification of `event_type` (for `template`, when given), waiting up to
    /// `patience`.
    fn wait_for(
        &self,
        fx: &Fixture,
        event_type: &str,
        template: Option<&str>,
        patience: Duration,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let found = self.notifications().into_iter().find(|n| {
                n["event_type"] == event_type
                    && template.is_none_or(|t| {
                        n["payload"]["template"] == t || n["payload"]["template"]["name"] == t
                    })
            });
            if let Some(n) = found {
                eprintln!("LISTENER got {event_type} after {:?}", start.elapsed());
                return n;
            }
            assert!(
                start.elapsed() < patience,
                "the listener printed no {event_type} within {patience:?}\n--- listener ---\n{}\n{}\n--- conductor ---\n{}",
                self.output(),
                self.errors(),
                fx.conductor_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, as an operator stops it; its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the listener's status") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the listener did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn show(fx: &Fixture, template: &str) -> serde_json::Value {
    json(&fx.manage(&["--format", "json", "template", "show", template]))[0].clone()
}

/// `(name, id)` of the template's VMs of `role`, those in the splitter's pool only when
/// `in_pool`.
fn vms(fx: &Fixture, role: &str, in_pool: bool) -> Vec<(String, String)> {
    show(fx, "site")["status"]["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|v| v["role"] == role && (!in_pool || v["in_pool"] == true))
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn manage_ok(fx: &Fixture, args: &[&str]) {
    let out = fx.manage(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}\n{}",
        stdout(&out),
        stderr(&out),
        fx.conductor_log()
    );
}

#[test]
fn issue_15_a_stock_oslo_messaging_listener_reads_every_event_type() {
    install_webtier();
    let mut fx = Fixture::new();
    fx.images_path = repo_images();
    // A quick policy, so that the site scales out and back in within a minute.
    fx.write_config(
        "[conductor]\ndrain_timeout = 30\n\n\
         [policy]\nstabilization = 2\nscale_in_delay = 3\nscale_in_cooldown = 3\n",
    );
    // 80 requests a second per web VM (4 threads, 50 ms): 16 clients need 2 for a 0.2 s
    // target, 2 clients need 1 (tests/scaling.rs has the arithmetic).
    let site = "[template]\nname = site\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
                min_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n\
                web_service_time_ms = 50\nweb_threads = 4\n";
    std::fs::write(fx.template_path("site"), site).unwrap();
    let broken =
        "[template]\nname = broken\nimage = no-such-image\nsplitter_image = no-such-image\n\
                  min_vms = 1\nmax_vms = 1\ntarget_response_time = 0.2\n";
    std::fs::write(fx.template_path("broken"), broken).unwrap();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    let listener = Listener::start(&fx);
    let minute = Duration::from_secs(60);

    // A template whose image the cloud does not have: vm.boot_failed; destroyed at once.
    fx.instantiate("broken");
    listener.wait_for(&fx, "autoscaler.vm.boot_failed", Some("broken"), minute);
    manage_ok(&fx, &["template", "destroy", "broken"]);
    listener.wait_for(&fx, "autoscaler.template.destroyed", Some("broken"), minute);

    // The site: instantiated, then ready (the CLI waits for it).
    let (url, _) = instantiate_site(&fx);
    listener.wait_for(&fx, "autoscaler.template.ready", Some("site"), minute);
    let page = format!("{}index.jsp", url.trim_end_matches("index.jsp"));

    // Load that needs two web VMs: scale.up.
    let load = ab_for(&page, 30, 16);
    listener.wait_for(&fx, "autoscaler.scale.up", Some("site"), minute);
    let start = Instant::now();
    while vms(&fx, "web", true).len() < 2 {
        assert!(start.elapsed() < minute, "{}", fx.conductor_log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // A splitter whose Apache configuration no longer passes `apache2 -t` refuses the
    // next pool (pool.rejected); a web VM killed meanwhile is failed (vm.failed), leaves
    // the pool (the update the splitter refuses) and is replaced (vm.replaced).
    let (_, splitter) = vms(&fx, "splitter", false)[0].clone();
    let httpd_conf = fx
        .dir
        .path()
        .join("state/local/vms")
        .join(&splitter)
        .join("apache/httpd.conf");
    let good = std::fs::read_to_string(&httpd_conf).expect("the splitter's httpd.conf");
    std::fs::write(
        &httpd_conf,
        format!("{good}\nAutoscalerTestNotADirective on\n"),
    )
    .unwrap();
    let (victim, victim_id) = vms(&fx, "web", true)[0].clone();
    signal_group(vm_pgid(&fx, &victim_id), "KILL");
    let failed = listener.wait_for(&fx, "autoscaler.vm.failed", Some("site"), minute);
    assert_eq!(
        failed["payload"]["vm_name"],
        victim.as_str(),
        "another VM failed first: {failed}\n{}",
        fx.conductor_log()
    );
    listener.wait_for(&fx, "autoscaler.pool.rejected", Some("site"), minute);
    std::fs::write(&httpd_conf, &good).unwrap();
    let replaced = listener.wait_for(&fx, "autoscaler.vm.replaced", Some("site"), minute);
    assert_eq!(replaced["payload"]["failed_vm_name"], victim.as_str());
    let _ = ab_result(load);

    // Light load: one web VM is enough again (scale.down).
    let load = ab_for(&page, 60, 2);
    listener.wait_for(
        &fx,
        "autoscaler.scale.down",
        Some("site"),
        Duration::from_secs(90),
    );

    // The operator deletes the web VM, then destroys the site.
    let start = Instant::now();
    while vms(&fx, "web", false).len() != 1 {
        assert!(start.elapsed() < minute, "{}", fx.conductor_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (web, _) = vms(&fx, "web", false)[0].clone();
    manage_ok(&fx, &["--no-wait", "vm", "delete", &web]);
    listener.wait_for(&fx, "autoscaler.vm.delete.start", Some("site"), minute);
    manage_ok(&fx, &["template", "destroy", "site"]);
    listener.wait_for(&fx, "autoscaler.template.destroyed", Some("site"), minute);
    let _ = ab_result(load);

    // Every event type, in the stock listener's own output, as OpenStack names its
    // publishers (`<service>.<host>`).
    let seen = listener.notifications();
    let publisher = format!("autoscaler.{}", fx.host);
    for (event_type, priority) in EVENTS {
        let n = seen
            .iter()
            .find(|n| n["event_type"] == event_type)
            .unwrap_or_else(|| panic!("no {event_type} in\n{}", listener.output()));
        let priority = match n["payload"]["cause"].as_str() {
            Some(cause) if cause != "status" => "WARN",
            _ => priority,
        };
        assert_eq!(n["priority"], priority, "{n}");
        assert_eq!(n["publisher_id"], publisher.as_str(), "{n}");
    }
    assert!(
        seen.iter().all(|n| n["publisher_id"] == publisher.as_str()),
        "{seen:?}"
    );
    eprintln!(
        "--- the oslo.messaging listener's output ---\n{}",
        listener.output()
    );
    let status = listener.stop();
    assert!(status.success(), "{status}");
}
