//! `autoscaler-manage monitor` against the real broker and a real conductor: what it
//! prints comes from the broker only (the conductor's ticks, an agent's metrics and
//! heartbeats published here as the agents would, the notifications), and bad messages
//! are counted, not fatal.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use autoscaler::messaging::{
    envelope, link::Outgoing, Durability, Heartbeat, LinkHandle, Metrics, Role, Stats, Topology,
};
use chrono::Utc;
use common::{stderr, stdout, Fixture};
use lapin::types::FieldTable;

fn metrics(requests: u64) -> Metrics {
    Metrics {
        group: "shop".into(),
        vm_id: "shop-splitter-test".into(),
        start: Utc::now(),
        interval: 1.0,
        site: Stats {
            requests,
            mean: 0.05,
            p95: 0.08,
            ..Stats::default()
        },
        members: vec![],
        malformed_lines: 0,
        modjk_messages: 0,
    }
}

async fn publish(link: &LinkHandle, exchange: &str, key: &str, sealed: (Vec<u8>, FieldTable)) {
    let (body, headers) = sealed;
    link.publish(
        Outgoing {
            exchange,
            routing_key: key,
            body: &body,
            confirm: false,
            ttl: Some(Duration::from_secs(10)),
            correlation_id: None,
            headers: Some(&headers),
        },
        Duration::from_secs(5),
    )
    .await
    .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_the_site_from_the_broker_alone() {
    let mut fx = Fixture::new();
    fx.start_conductor();
    let fx = tokio::task::spawn_blocking(move || {
        fx.wait_for_conductor(Duration::from_secs(20));
        fx
    })
    .await
    .unwrap();
    let monitor = Command::new(env!("CARGO_BIN_EXE_autoscaler-manage"))
        .arg("--config-file")
        .arg(fx.config_path())
        .args(["--format", "json", "monitor", "shop", "--seconds", "6"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the monitor");
    // What is published before its queue is bound is not its to see: wait for it.
    let queue = format!("{}.monitor.{}.{}", fx.exchange, fx.host, monitor.id());
    fx.wait_for_consumer(&queue, Duration::from_secs(20)).await;
    let fx = tokio::task::spawn_blocking(move || {
        fx.instantiate("shop");
        fx
    })
    .await
    .unwrap();

    // An agent's share, published as the agents do, signed (another template's too, and
    // junk); metrics in the splitter's name without its MAC are not shown (issue 17).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (link, task) = autoscaler::messaging::Link::new(
        fx.link_config(),
        Topology::new(fx.exchange.clone(), Durability::Transient),
        vec![],
    )
    .spawn(stopped);
    for _ in 0..3 {
        let now = Utc::now();
        let splitter = "shop-splitter-test";
        let sealed = fx.seal(splitter, "agent.s", now, &metrics(42));
        publish(&link, &fx.exchange, "metrics.shop", sealed).await;
        let forged = (
            envelope::encode("agent.s", now, &metrics(99)),
            FieldTable::default(),
        );
        publish(&link, &fx.exchange, "metrics.shop", forged).await;
        let heartbeat = Heartbeat {
            group: "shop".into(),
            vm_id: "shop-web-test".into(),
            role: Role::Web,
            seq: 0,
            serving: Some(true),
            url: None,
            address: None,
        };
        let sealed = fx.seal("shop-web-test", "agent.w", now, &heartbeat);
        publish(&link, &fx.exchange, "heartbeat.shop.shop-web-test", sealed).await;
        let mut other = metrics(7);
        other.group = "blog".into();
        let sealed = fx.seal(splitter, "agent.b", now, &other);
        publish(&link, &fx.exchange, "metrics.blog", sealed).await;
        let junk = (b"{not json".to_vec(), FieldTable::default());
        publish(&link, &fx.exchange, "metrics.shop", junk).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let _ = stop.send(true);
    let _ = task.await;

    let out = tokio::task::spawn_blocking(move || monitor.wait_with_output())
        .await
        .unwrap()
        .expect("monitor output");
    assert!(out.status.success(), "monitor: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let seconds: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "second").collect();
    assert!(seconds.len() >= 3, "a line a second: {lines:#?}");
    assert!(
        seconds.iter().all(|s| s["template"] == "shop"),
        "only the template asked for: {seconds:#?}"
    );
    let with_metrics = seconds
        .iter()
        .find(|s| s["rate"] == 42.0 && s["heard_web"] == 1)
        .unwrap_or_else(|| panic!("the agent's metrics and heartbeat: {seconds:#?}"));
    assert_eq!(with_metrics["mean"], 0.05);
    assert!(
        seconds
            .iter()
            .any(|s| s["decision"].is_string() && s["target"] == 0.2),
        "the conductor's ticks: {seconds:#?}"
    );
    let notices: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "notification")
        .filter_map(|l| l["event_type"].as_str())
        .collect();
    assert!(
        notices.contains(&"autoscaler.template.instantiated"),
        "notifications: {notices:?}"
    );
    assert!(
        stderr(&out).contains("WARNING: 3 unreadable messages dropped"),
        "junk is counted: {}",
        stderr(&out)
    );
    assert!(
        seconds.iter().all(|s| s["rate"] != 99.0),
        "unsigned metrics shown: {seconds:#?}"
    );
    assert!(
        stderr(&out).contains("WARNING: 3 agent messages without their VM's MAC not shown"),
        "forged metrics are counted: {}",
        stderr(&out)
    );
}

#[test]
fn the_monitor_says_when_the_broker_cannot_be_reached() {
    let fx = Fixture::with_url("rabbit://guest:guest@127.0.0.1:1/".into(), None);
    let started = std::time::Instant::now();
    let out = fx.manage(&["--timeout", "2", "monitor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "ERROR: cannot connect to rabbit://guest@127.0.0.1:1/: guest@127.0.0.1:1: "
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_bad_template_name_is_a_usage_error_of_its_own() {
    let fx = Fixture::new();
    let out = fx.manage(&["monitor", "no/such"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("ERROR: \"no/such\" is not a template name: "),
        "{}",
        stderr(&out)
    );
}
