//! The database side of several conductors at scale: 1,000 sites on two conductors
//! (`Conductor::refresh`, the pass each conductor makes every tick), on the real MariaDB.
//! No broker and no cloud: the groups are not stepped; what is measured is what the
//! leases, the service records and the plan cost, and how long the survivor takes to take
//! 500 groups over when the other conductor stops renewing.
//!
//! Statements are counted exactly: sqlx reports each one as a `sqlx::query` tracing event,
//! which a layer here counts. Figures print with `-- --nocapture`.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use autoscaler::{
    conductor::{
        api::TemplateRecord,
        handler::{Conductor, Identity},
        memory::Memory,
        state::VmRegistry,
    },
    conf::Config,
    store::{DatabaseUrl, PoolSettings, Store},
    template::Template,
};
use chrono::Utc;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

const SITES: usize = 1000;
const LEASE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct CountStatements;

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn server() -> String {
    std::env::var("AUTOSCALER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

async fn store(url: &DatabaseUrl) -> Store {
    Store::connect(url, &PoolSettings::default()).await.unwrap()
}

fn conductor(store: Store, host: &str) -> Conductor {
    let config = Config::default();
    Conductor {
        identity: Identity {
            host: host.into(),
            started_at: Utc::now(),
        },
        max_vms_ceiling: 20,
        templates: BTreeMap::new(),
        vms: VmRegistry::default(),
        groups: BTreeMap::new(),
        memory: Memory::new(store, host.into(), LEASE, Duration::from_secs(10)),
        settings: autoscaler::conductor::group_settings(&config),
        received_requests: 0,
        received_telemetry: 0,
        sequences: Default::default(),
    }
}

fn record(i: usize) -> TemplateRecord {
    let text = format!(
        "name = site{i:04}\nimage = tomcat-web\nmin_vms = 10\nmax_vms = 10\ntarget_response_time = 0.2\n"
    );
    TemplateRecord {
        template: Template::parse("bench.template", &text, 20).unwrap(),
        source: "bench.template".into(),
        instantiated_at: Utc::now(),
        destroying: false,
    }
}

/// CPU seconds this process has used (all threads): utime + stime of /proc/self/stat,
/// in clock ticks of 1/100 s (Linux's USER_HZ).
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command may contain spaces: the fields after its closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<f64>().unwrap();
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sites_on_two_conductors_cost_few_statements_and_move_on_failure() {
    tracing_subscriber::registry()
        .with(CountStatements.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG))
        .init();
    let server = server();
    let name = format!("autoscaler_scale_{}", uuid::Uuid::new_v4().simple());
    let admin = store(&format!("{server}/mysql").parse().unwrap()).await;
    sqlx::query(&format!("CREATE DATABASE `{name}`"))
        .execute(admin.pool())
        .await
        .unwrap();
    let url: DatabaseUrl = format!("{server}/{name}?charset=utf8").parse().unwrap();
    let setup = store(&url).await;
    setup.sync().await.unwrap();
    for i in 0..SITES {
        setup.insert_template(&record(i)).await.unwrap();
    }
    let mut a = conductor(store(&url).await, "conductor-a");
    let mut b = conductor(store(&url).await, "conductor-b");

    // Both report, then share the groups by the plan (the first passes take and hand over).
    let start = Instant::now();
    for _ in 0..4 {
        a.refresh().await;
        b.refresh().await;
    }
    let (held_a, held_b) = (a.groups.len(), b.groups.len());
    eprintln!(
        "spread: conductor-a {held_a}, conductor-b {held_b} of {SITES} ({:.1} s for 4 passes each)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(held_a + held_b, SITES);
    assert!((400..=600).contains(&held_a), "{held_a}");

    // Steady state: a pass each per tick, nothing changes.
    let ticks = 10;
    let (statements, cpu_start, wall) = (STATEMENTS.load(Ordering::Relaxed), cpu(), Instant::now());
    for _ in 0..ticks {
        let next = Instant::now() + TICK;
        a.refresh().await;
        b.refresh().await;
        tokio::time::sleep_until(next.into()).await;
    }
    let per_tick = (STATEMENTS.load(Ordering::Relaxed) - statements) as f64 / ticks as f64 / 2.0;
    let cpu_share = (cpu() - cpu_start) / wall.elapsed().as_secs_f64() / 2.0;
    eprintln!(
        "steady: {per_tick:.1} statements per conductor per tick ({:.1} per second for both); \
         the pass's CPU {:.1} % of a core per conductor (debug build)",
        per_tick * 2.0 / TICK.as_secs_f64(),
        cpu_share * 100.0
    );
    assert_eq!(held_a, a.groups.len(), "nothing moved");
    assert!(per_tick <= 6.0, "{per_tick} statements a tick");

    // conductor-a stops (as kill -9 would leave it: no release). conductor-b takes its
    // groups once their leases expire.
    let stopped = Instant::now();
    let before = STATEMENTS.load(Ordering::Relaxed);
    let mut all_at = None;
    while stopped.elapsed() < LEASE * 3 {
        let next = Instant::now() + TICK;
        b.refresh().await;
        if b.groups.len() == SITES {
            all_at = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let took = all_at.expect("conductor-b never held every group");
    eprintln!(
        "failover: conductor-b held all {SITES} groups {:.1} s after conductor-a's last pass \
         (lease {} s); the takeover pass took {held_a} groups with {} statements",
        took.as_secs_f64(),
        LEASE.as_secs(),
        STATEMENTS.load(Ordering::Relaxed) - before
    );
    assert!(took <= LEASE + Duration::from_secs(5), "{took:?}");
    drop((a, b));
    setup.close().await;
    sqlx::query(&format!("DROP DATABASE `{name}`"))
        .execute(admin.pool())
        .await
        .unwrap();
}
