//! Issue 17: a hostile tenant's VM against a live conductor on the real RabbitMQ. Each
//! attack of the issue's list that reaches the conductor must be dropped and counted (by
//! reason, in `conductor status`), the fleet must not change, and the conductor must keep
//! answering with its memory (RSS) within a few MB.

mod common;

use std::time::{Duration, Instant};

use autoscaler::messaging::{
    envelope, Heartbeat, MemberStats, Metrics, PoolAck, PoolOutcome, Role, Stats,
};
use chrono::{DateTime, Utc};
use common::{stderr, stdout, Fixture};
use lapin::{options::BasicPublishOptions, BasicProperties, Channel};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)))
}

/// The shop group as the conductor shows it: (its VMs as (name, role), pool generation,
/// acknowledged generation).
fn shown(fx: &Fixture) -> (Vec<(String, String)>, u64, u64) {
    let shown = json(&fx.manage(&["--format", "json", "template", "show", "shop"]));
    let status = &shown[0]["status"];
    let mut vms: Vec<(String, String)> = status["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|vm| {
            let field = |k: &str| vm[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("role"))
        })
        .collect();
    vms.sort();
    let generation = |k: &str| status[k].as_u64().unwrap_or(0);
    (
        vms,
        generation("pool_generation"),
        generation("acked_generation"),
    )
}

fn status(fx: &Fixture) -> serde_json::Value {
    json(&fx.manage(&["--format", "json", "conductor", "status"]))
}

/// The conductor's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until the conductor's drop counters satisfy `done`.
fn wait_for_drops(fx: &Fixture, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(fx);
        if done(&status["dropped"]) {
            return;
        }
        let log = fx.conductor_log();
        let tail = &log[log.len().saturating_sub(4000)..];
        assert!(Instant::now() < deadline, "{what}: {status}\n{tail}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8]) {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

fn heartbeat(group: &str, vm: &str, role: Role, serving: bool) -> Heartbeat {
    Heartbeat {
        group: group.into(),
        vm_id: vm.into(),
        role,
        seq: 1,
        serving: Some(serving),
        url: None,
        address: Some("127.0.0.1".into()),
    }
}

fn high_load(group: &str, vm: &str, start: DateTime<Utc>) -> Metrics {
    let stats = Stats {
        requests: 5000,
        errors: 0,
        mean: 5.0,
        p50: 5.0,
        p95: 9.0,
        p99: 9.0,
        max: 9.0,
    };
    Metrics {
        group: group.into(),
        vm_id: vm.into(),
        start,
        interval: 1.0,
        site: stats,
        members: vec![MemberStats {
            member: "anything".into(),
            stats,
            busy: Some(100),
        }],
        malformed_lines: 0,
        modjk_messages: 0,
    }
}

/// The shop site instantiated on test images, its splitter and web VM listed.
fn shop_with_fleet() -> (Fixture, Vec<(String, String)>) {
    let mut fx = Fixture::new();
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    fx.instantiate("shop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (vms, generation, _) = shown(&fx);
        if vms.len() == 2 && generation > 0 {
            return (fx, vms);
        }
        assert!(Instant::now() < deadline, "{vms:?}\n{}", fx.conductor_log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn named(vms: &[(String, String)], role: &str) -> String {
    vms.iter().find(|(_, r)| r == role).unwrap().0.clone()
}

/// Issue 17, bounded intake: impossible times, made-up VMs and groups, metrics and
/// acknowledgements from the wrong VM, a generation never sent and a 100 MiB body: each
/// dropped and counted (or refused by the broker), the fleet unchanged, the conductor
/// answering within a few MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_hostile_telemetry_is_dropped_counted_and_changes_nothing() {
    let (fx, fleet) = tokio::task::spawn_blocking(shop_with_fleet).await.unwrap();
    let splitter = named(&fleet, "splitter");
    let web = named(&fleet, "web");
    let (_, _, acked_before) = shown(&fx);
    let pid = fx.conductor_pid();
    let rss_before = rss_kib(pid);
    let connection = fx.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let now = Utc::now();
    let end_of_time: DateTime<Utc> = "+262142-12-31T23:59:59Z".parse().unwrap();
    let exchange = fx.exchange.clone();
    let send = |key: &'static str, body: Vec<u8>| {
        let (channel, exchange) = (&channel, &exchange);
        async move { publish(channel, exchange, key, &body).await }
    };
    // Out of window: the issue's crash (metrics starting at the end of time), a message
    // written at the end of time, and one from long ago.
    let m = high_load("shop", &splitter, end_of_time);
    send("metrics.shop", envelope::encode(&splitter, now, &m)).await;
    let m = high_load("shop", &splitter, now);
    send("metrics.shop", envelope::encode(&splitter, end_of_time, &m)).await;
    let old = DateTime::<Utc>::MIN_UTC;
    send("metrics.shop", envelope::encode(&splitter, old, &m)).await;
    // Metrics from a web VM, and for a made-up group.
    let m = high_load("shop", &web, now);
    send("metrics.shop", envelope::encode(&web, now, &m)).await;
    let m = high_load("made-up", &splitter, now);
    send("metrics.made-up", envelope::encode(&splitter, now, &m)).await;
    // An acknowledgement of 2^64-1 in the splitter's name, and one from a web VM.
    let ack = |vm: &str, generation| PoolAck {
        group: "shop".into(),
        vm_id: vm.to_owned(),
        generation,
        outcome: PoolOutcome::Applied,
    };
    let body = envelope::encode(&splitter, now, &ack(&splitter, u64::MAX));
    send("pool-ack.shop", body).await;
    send("pool-ack.shop", envelope::encode(&web, now, &ack(&web, 1))).await;
    // A heartbeat naming the web VM in another group, and as the splitter.
    let hb = heartbeat("other", &web, Role::Web, false);
    send("heartbeat.other", envelope::encode(&web, now, &hb)).await;
    let hb = heartbeat("shop", &web, Role::Splitter, false);
    send("heartbeat.shop", envelope::encode(&web, now, &hb)).await;
    // 10,000 heartbeats with made-up ids.
    for i in 0..10_000 {
        let hb = heartbeat("shop", &format!("made-up-{i}"), Role::Web, true);
        let body = envelope::encode("x", now, &hb);
        channel
            .basic_publish(
                exchange.as_str().into(),
                "heartbeat.shop".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let fx = tokio::task::spawn_blocking(move || {
        wait_for_drops(&fx, "every hostile message counted", |d| {
            d["out_of_window"] == 3
                && d["not_splitter"] == 2
                && d["unknown_group"] == 2
                && d["future_generation"] == 1
                && d["not_listed"] == 10_001
        });
        // Nothing of them kept: no made-up VM, the fleet and the pool as they were.
        let vms = json(&fx.manage(&["--format", "json", "vm", "list"]));
        let listed: Vec<&str> = vms
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["vm_id"].as_str())
            .collect();
        assert!(listed.iter().all(|v| !v.starts_with("made-up")), "{vms}");
        let (after, _, acked) = shown(&fx);
        assert_eq!(after, fleet, "{}", fx.conductor_log());
        assert_eq!(acked, acked_before);
        fx
    })
    .await
    .unwrap();
    // A 100 MiB body: delivered to the waiting consumer, refused on its length before any
    // decoding (when it has to wait in the queue, the queue's x-max-length-bytes drops
    // it at the broker instead).
    send("heartbeat.shop", vec![b' '; 100 << 20]).await;
    let hb = heartbeat("shop", "made-up-last", Role::Web, true);
    send("heartbeat.shop", envelope::encode("x", Utc::now(), &hb)).await;
    let fx = tokio::task::spawn_blocking(move || {
        wait_for_drops(&fx, "the body after the big one taken", |d| {
            d["not_listed"] == 10_002
        });
        assert!(status(&fx)["dropped"]["oversized"].as_u64().unwrap() <= 1);
        let grown = rss_kib(pid).saturating_sub(rss_before);
        println!("conductor RSS grew by {grown} KiB over the attacks");
        assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
        fx
    })
    .await
    .unwrap();
    let log = fx.conductor_log();
    assert!(!log.contains("panicked"), "{log}");
    // Rate-limited: not a line per drop.
    assert!(log.matches("dropped a message").count() < 20, "{log}");
    connection.close(200, "done".into()).await.unwrap();
}
