//! `autoscaler-sim overhead`: what the control plane costs, each figure beside a
//! baseline measured in the same command (so a busy machine shows as a ratio, not as a
//! false alarm):
//!
//! - a policy tick (`LittlePolicy::decide`) with 1,000 VMs, beside one with 10;
//! - message encoding and decoding (a heartbeat, and metrics of 100 members);
//! - simulated seconds per wall second for 100 VMs (an hour at ~8,000 requests a second);
//! - the conductor's intake from RabbitMQ: heartbeats published to an exchange and queue
//!   of this command's own (deleted afterwards), consumed, decoded with the conductor's
//!   `decode_telemetry`, recorded with `VmRegistry::heard` and acknowledged one by one as
//!   the conductor does; beside a baseline that only consumes and acknowledges. The CPU
//!   time is this process's (from /proc/self/stat), the broker's own is not counted.
//!
//! Request-log parsing has its own criterion bench in the agent:
//! `cargo bench -p autoscaler-agent --bench request_log`.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use autoscaler::{
    conductor::{delivery::decode_telemetry, state::VmRegistry},
    messaging::{
        envelope::encode, link, signing::MessageSecrets, Durability, Envelope, Heartbeat,
        LinkConfig, MemberStats, Metrics, QueueSpec, Role, Stats, Topology, TransportUrl,
    },
    policy::{FleetVm, Inputs, LittlePolicy, Observation, ScalingPolicy, VmPhase},
    sim::{
        load::Load,
        peers::{product_settings, PolicyKind},
        suite::suite_site,
        world,
    },
};
use chrono::{DateTime, TimeDelta, Utc};
use futures_lite::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties,
};

#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// The broker for the intake figures; `none` skips them.
    #[arg(long, default_value = "rabbit://guest:guest@127.0.0.1:5672/")]
    broker: String,
    /// Heartbeats published for each intake figure.
    #[arg(long, default_value_t = 50_000)]
    messages: u32,
    /// Simulated seconds for the simulator's speed (100 VMs).
    #[arg(long, default_value_t = 3600)]
    sim_seconds: u32,
}

pub fn main(a: &OverheadArgs) -> Result<()> {
    println!("| figure | value | baseline (same command) |\n|---|---:|---:|");
    policy_tick();
    coding();
    simulator(a.sim_seconds);
    if a.broker != "none" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        runtime.block_on(intake(&a.broker, a.messages))?;
    }
    Ok(())
}

fn at(t: f64) -> DateTime<Utc> {
    world::epoch() + TimeDelta::milliseconds((t * 1000.0) as i64)
}

/// Mean wall time of one call of `f`, over enough calls to last about `budget`.
fn time_per_call(budget: Duration, mut f: impl FnMut(u64)) -> Duration {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            f(n);
            n += 1;
        }
    }
    started.elapsed() / n as u32
}

/// Mean time of a tick with `vms` active VMs under a load that needs `need` of them
/// (`need < vms`: every tick names the VMs to remove, sorting them all, the worst case).
fn tick_with(vms: u32, need: f64) -> Duration {
    let config = suite_site(1, vms + 10);
    let mut settings = product_settings(&config);
    settings.min_vms = 1;
    let aim = settings.aim();
    let mut policy = LittlePolicy::new(settings);
    let fleet: Vec<FleetVm> = (0..vms)
        .map(|i| FleetVm {
            name: format!("web-{i}"),
            phase: VmPhase::Active,
            created_at: at(-600.0),
            busy: Some(i % 5),
        })
        .collect();
    // 70 requests a second a VM, under the aim: the throughput per VM stands in for the
    // capacity, so the need is L / ((rate / vms) × aim) = vms × mean / aim.
    let rate = f64::from(vms) * 70.0;
    let mean = need * aim / f64::from(vms);
    time_per_call(Duration::from_millis(500), |n| {
        let obs = [Observation {
            end: at(n as f64),
            interval: 1.0,
            requests: rate as u64,
            mean,
            p95: 0.3,
            serving: vms,
        }];
        black_box(policy.decide(
            at(n as f64 + 0.5),
            Inputs {
                observations: &obs,
                fleet: &fleet,
            },
        ));
    })
}

fn policy_tick() {
    let hold = tick_with(1000, 999.5);
    let small = tick_with(10, 9.5);
    let removing = tick_with(1000, 800.0);
    println!(
        "| policy tick, 1,000 VMs (hold) | {:.1} µs | {:.1} µs with 10 VMs |",
        hold.as_secs_f64() * 1e6,
        small.as_secs_f64() * 1e6
    );
    println!(
        "| policy tick, 1,000 VMs, naming 200 to remove (sorts all 1,000) | {:.1} µs | |",
        removing.as_secs_f64() * 1e6
    );
}

fn metrics(members: usize) -> Metrics {
    let stats = Stats {
        requests: 80,
        errors: 0,
        mean: 0.05,
        p50: 0.05,
        p95: 0.09,
        p99: 0.1,
        max: 0.2,
    };
    Metrics {
        group: "shop".into(),
        vm_id: "shop-splitter".into(),
        start: at(0.0),
        interval: 1.0,
        site: stats,
        members: (0..members)
            .map(|i| MemberStats {
                member: format!("shop_web_{i}"),
                stats,
                busy: Some(3),
            })
            .collect(),
        malformed_lines: 0,
        modjk_messages: 0,
    }
}

fn heartbeat(i: u64) -> Heartbeat {
    Heartbeat {
        group: "shop".into(),
        vm_id: format!("shop-web-{}", i % 1000),
        role: Role::Web,
        seq: i,
        serving: Some(true),
        url: None,
        // As a real web agent sends it (the address its Tomcat listens on).
        address: Some(format!("10.0.{}.{}", i / 250 % 250, i % 250)),
    }
}

fn coding() {
    let hb = heartbeat(7);
    let hb_bytes = encode("agent.shop-web-7", at(0.0), &hb);
    let m = metrics(100);
    let m_bytes = encode("agent.shop-splitter", at(0.0), &m);
    let per_second = |d: Duration| 1.0 / d.as_secs_f64();
    let enc_hb = time_per_call(Duration::from_millis(300), |_| {
        black_box(encode("agent.shop-web-7", at(0.0), black_box(&hb)));
    });
    let dec_hb = time_per_call(Duration::from_millis(300), |_| {
        black_box(decode_telemetry(black_box(&hb_bytes), 65_536).ok());
    });
    let enc_m = time_per_call(Duration::from_millis(300), |_| {
        black_box(encode("agent.shop-splitter", at(0.0), black_box(&m)));
    });
    let dec_m = time_per_call(Duration::from_millis(300), |_| {
        black_box(decode_telemetry(black_box(&m_bytes), 1 << 20).ok());
    });
    let envelope_only = time_per_call(Duration::from_millis(300), |_| {
        black_box(Envelope::decode(black_box(&hb_bytes), 65_536).ok());
    });
    println!(
        "| heartbeat encode / decode ({} bytes) | {:.0} / {:.0} per s | envelope stage only: {:.0} per s |",
        hb_bytes.len(),
        per_second(enc_hb),
        per_second(dec_hb),
        per_second(envelope_only)
    );
    println!(
        "| metrics of 100 members encode / decode ({} bytes) | {:.0} / {:.0} per s | |",
        m_bytes.len(),
        per_second(enc_m),
        per_second(dec_m)
    );
    signing(&hb_bytes, dec_hb);
}

/// Issue 17: what the MAC adds to a heartbeat, beside its decoding in the same run: the
/// agent's signing, and the conductor's check (the VM's key derived, then the MAC).
fn signing(hb_bytes: &[u8], dec_hb: Duration) {
    let secrets = MessageSecrets::new(&[5; 44], None);
    let key = secrets.vm_key("shop-web-7");
    let mac = key.sign(hb_bytes);
    let sign = time_per_call(Duration::from_millis(300), |_| {
        black_box(key.sign(black_box(hb_bytes)));
    });
    let verify = time_per_call(Duration::from_millis(300), |_| {
        black_box(secrets.verify("shop-web-7", black_box(hb_bytes), mac.as_bytes()));
    });
    println!(
        "| heartbeat sign / check (derive the VM's key, HMAC-SHA256) | {:.0} / {:.0} per s | check = {:.2} x the decoding |",
        1.0 / sign.as_secs_f64(),
        1.0 / verify.as_secs_f64(),
        verify.as_secs_f64() / dec_hb.as_secs_f64()
    );
}

fn simulator(seconds: u32) {
    // 1,440 closed-loop clients need 100 VMs (1,440 × 0.05 / (4 × 0.2) = 90 at the
    // target, 100 at the policy's aim); the site starts and stays at 100.
    let text = format!("{seconds} 1440 high\n");
    let load = Load::closed(
        &autoscaler::scenario::Scenario::parse("overhead", &text).expect("a valid scenario"),
    );
    let mut config = suite_site(1, 100);
    config.min_vms = 100;
    let mut policy = PolicyKind::Autoscaler.build(&config, &load);
    let cpu_before = cpu_time().unwrap_or_default();
    let started = Instant::now();
    let result = world::run(&config, &load, policy.as_mut());
    let wall = started.elapsed().as_secs_f64();
    // CPU time as well: on a shared machine the wall time includes waiting for a core.
    let cpu = cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_before)
        .as_secs_f64();
    let requests: u64 = result.phases.iter().map(|p| p.complete + p.failed).sum();
    // Baseline: the same hour on 1 VM (80 requests a second).
    let small_load = Load::closed(
        &autoscaler::scenario::Scenario::parse("overhead", &format!("{seconds} 14 high\n"))
            .expect("a valid scenario"),
    );
    let mut small = suite_site(1, 1);
    small.min_vms = 1;
    let mut policy = PolicyKind::Autoscaler.build(&small, &small_load);
    let started = Instant::now();
    let small_result = world::run(&small, &small_load, policy.as_mut());
    let small_wall = started.elapsed().as_secs_f64();
    println!(
        "| simulator, 100 VMs, {seconds} s ({requests} requests, {} events) | {wall:.2} s wall ({cpu:.2} s CPU): {:.0} simulated s per wall s | 1 VM: {small_wall:.2} s wall ({} events) |",
        result.events,
        f64::from(seconds) / wall,
        small_result.events
    );
}

/// This process's CPU time so far (user + system), from /proc/self/stat.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime), counted from the state (field 3).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

async fn intake(broker: &str, messages: u32) -> Result<()> {
    let url: TransportUrl = broker.parse().context("--broker")?;
    let config = LinkConfig::new(url, "autoscaler-sim-overhead");
    let (connection, _) = link::connect(&config, 0).await?;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let topology = Topology::new(format!("autoscaler-bench-{id}"), Durability::Transient);
    let queue = format!("autoscaler-bench-{id}.telemetry");
    let channel = connection.create_channel().await?;
    topology.declare_exchange(&channel).await?;
    topology
        .declare_queue(
            &channel,
            &queue,
            &QueueSpec {
                durable: false,
                auto_delete: false,
                max_length: Some(messages * 2),
                max_length_bytes: None,
                expires: None,
            },
            &["heartbeat.#".to_owned()],
        )
        .await?;
    let outcome = async {
        let baseline = pass(&connection, &topology, &queue, messages, false).await?;
        let full = pass(&connection, &topology, &queue, messages, true).await?;
        Ok::<_, anyhow::Error>((baseline, full))
    }
    .await;
    // Delete what was declared, whatever happened.
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(
            topology.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = connection.close(200, "done".into()).await;
    let ((base_rate, base_cpu), (rate, cpu)) = outcome?;
    let per_1000 = |cpu: Duration, n: u32| cpu.as_secs_f64() / f64::from(n) * 1000.0;
    println!(
        "| conductor intake of heartbeats from RabbitMQ | {rate:.0} msg/s, {:.3} CPU-s per 1,000 (1,000 VMs a second: {:.0} % of a core) | consume + ack only: {base_rate:.0} msg/s, {:.3} CPU-s per 1,000 |",
        per_1000(cpu, messages),
        per_1000(cpu, messages) * 100.0,
        per_1000(base_cpu, messages)
    );
    Ok(())
}

/// Publishes `messages` heartbeats, then consumes them; returns messages a second and the
/// CPU time of the consuming.
async fn pass(
    connection: &lapin::Connection,
    topology: &Topology,
    queue: &str,
    messages: u32,
    take_in: bool,
) -> Result<(f64, Duration)> {
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let now = Utc::now();
    let mut confirms = Vec::new();
    for i in 0..u64::from(messages) {
        let hb = heartbeat(i);
        let key = Topology::heartbeat_key(&hb.group, &hb.vm_id);
        let bytes = encode(&format!("agent.{}", hb.vm_id), now, &hb);
        confirms.push(
            publisher
                .basic_publish(
                    topology.exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &bytes,
                    BasicProperties::default(),
                )
                .await?,
        );
        if confirms.len() >= 1000 {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms.drain(..) {
        c.await?;
    }
    let _ = publisher.close(200, "published".into()).await;

    let channel = connection.create_channel().await?;
    // The conductor's telemetry window (TELEMETRY_PREFETCH in conductor/service.rs).
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "autoscaler-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut registry = VmRegistry::default();
    let cpu_before = cpu_time().unwrap_or_default();
    let started = Instant::now();
    let mut taken = 0;
    while taken < messages {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .context("no delivery for 30 s")?
            .context("the consumer ended")??;
        if take_in {
            if let Ok(autoscaler::conductor::delivery::Telemetry::Heartbeat(hb)) =
                decode_telemetry(&delivery.data, 65_536)
            {
                registry.heard(hb, Utc::now());
            }
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        taken += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_time().unwrap_or_default().saturating_sub(cpu_before);
    let _ = channel.close(200, "consumed".into()).await;
    black_box(registry);
    Ok((f64::from(messages) / wall, cpu))
}
