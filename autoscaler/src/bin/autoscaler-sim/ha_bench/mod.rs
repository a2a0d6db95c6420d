//! `autoscaler-sim ha-bench`: two whole conductors at scale (issue 14, item 6). Both run
//! the real service loop in this process, each on a thread and runtime of its own, over
//! the real RabbitMQ and a MariaDB database of the bench's own, steering `--sites` groups
//! of `--web-vms` web VMs and a splitter each in an in-memory cloud
//! ([`autoscaler::driver::MemoryDriver`]: listings without processes), while simulated
//! agents publish a heartbeat per VM per second and each splitter its metrics per second
//! ([`agents`]). Measured over a steady window:
//!
//! - each conductor's CPU time (its runtime's threads and its broker I/O thread, from
//!   `/proc/self/task`) as a fraction of one core;
//! - the database statements each conductor sends, by kind (sqlx's own events);
//! - that every group is stepped by exactly one conductor (its time-series file grows
//!   under one conductor's state directory only);
//!
//! then one conductor is stopped as kill -9 would (no lease released) and the bench
//! measures how long the other takes to hold every group and to step them all.
//! Everything the bench made (database, exchange, queues, state) is removed at the end.

mod agents;
mod meter;
mod report;
mod setup;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use autoscaler::messaging::TransportUrl;

use self::{
    agents::Agents,
    meter::Owners,
    report::{Failover, Report, Steady},
    setup::{Database, Running},
};

#[derive(Debug, clap::Args)]
pub struct HaBenchArgs {
    /// The broker (the bench declares an exchange of its own and deletes it after).
    #[arg(long, default_value = "rabbit://guest:guest@127.0.0.1:5672/")]
    pub broker: String,
    /// The MariaDB/MySQL server, as `mysql://user[:password]@host:port`; the bench
    /// creates a database of its own there and drops it after.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    pub database: String,
    /// Sites (groups), each a splitter and `--web-vms` web VMs.
    #[arg(long, default_value_t = 1000)]
    pub sites: usize,
    #[arg(long, default_value_t = 10)]
    pub web_vms: u32,
    /// Length of the steady window measured, seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const HOSTS: [&str; 2] = ["conductor-a", "conductor-b"];
/// How long the conductors may take to share the sites and send every pool.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// How long the bench waits for the handovers to end before it measures anyway.
const STILL_LIMIT: Duration = Duration::from_secs(60);
/// How long the survivor may take to hold and step every site after the kill.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

pub fn main(a: &HaBenchArgs) -> Result<()> {
    meter::count_statements();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("bench")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let exchange = format!("habench_{id}");
    let state = std::env::temp_dir().join(&exchange);
    let report = runtime.block_on(bench(a, &exchange, &state));
    let _ = std::fs::remove_dir_all(&state);
    runtime.block_on(report::delete_broker_objects(&a.broker, &exchange, &HOSTS));
    let report = report?;
    match a.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{}", report.table()),
    }
    Ok(())
}

async fn bench(a: &HaBenchArgs, exchange: &str, state: &Path) -> Result<Report> {
    let db = Database::create(&a.database, exchange, a.sites, a.web_vms).await?;
    let result = run(a, exchange, state, &db).await;
    db.drop_it().await?;
    result
}

async fn run(a: &HaBenchArgs, exchange: &str, state: &Path, db: &Database) -> Result<Report> {
    // One message key for both conductors, as a deployment shares one.
    let message_key = state.join("message.key");
    let secret = autoscaler::messaging::signing::new_secret();
    autoscaler::conf::agent::create_key_file(&message_key, &secret)?;
    let configs = HOSTS
        .iter()
        .map(|host| {
            setup::config(
                host,
                &a.broker,
                exchange,
                &db.connection(),
                &state.join(host),
                &message_key,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let cloud = setup::cloud(&configs[0], &db.store, a.sites, a.web_vms).await?;
    let mut owners = Owners::default();
    let mut conductors = Vec::new();
    for config in configs {
        let before = meter::io_threads();
        let host = config.default.host.clone();
        conductors.push(Running::start(config, cloud.clone())?);
        owners.claim(&host, &before, &wait_for_io_thread(&before).await?);
    }
    let before = meter::io_threads();
    let url: TransportUrl = a.broker.parse().context("--broker")?;
    let agents = Agents::start(
        url,
        autoscaler::messaging::Topology::new(
            exchange,
            autoscaler::messaging::Durability::Transient,
        ),
        cloud.clone(),
        configs_secrets(&message_key)?,
    )?;
    owners.claim("agents", &before, &wait_for_io_thread(&before).await?);
    let settled = settle(a.sites, a.web_vms as usize, db, &agents).await?;
    let shared = steady(a, state, &owners, &agents, db, &cloud).await?;
    let mut conductors = conductors.into_iter();
    let (victim, survivor) = (conductors.next().unwrap(), conductors.next().unwrap());
    let failover = failover(a.sites, state, db, &owners, victim, &survivor).await;
    // The survivor alone with every site (issue 14: all the VMs on one conductor), once
    // its takeover's pools are written.
    let alone = match &failover {
        Ok(f) if f.all_stepped_s.is_some() => {
            still(db).await?;
            Some(steady(a, state, &owners, &agents, db, &cloud).await)
        }
        _ => None,
    };
    survivor.stop()?;
    agents.stop()?;
    Ok(Report {
        sites: a.sites,
        vms: cloud.len(),
        settled_s: settled.as_secs_f64(),
        steady: shared,
        failover: failover?,
        alone: alone.transpose()?,
    })
}

/// The new broker I/O threads once a connection is up (one per connection).
async fn wait_for_io_thread(
    before: &std::collections::BTreeSet<u32>,
) -> Result<std::collections::BTreeSet<u32>> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let now = meter::io_threads();
        if now.difference(before).next().is_some() {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no broker connection within 30 s")
}

/// Waits until the conductors hold every site between them and each site's splitter
/// has received a pool of all its web VMs: how long that took.
async fn settle(sites: usize, webs: usize, db: &Database, agents: &Agents) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let held: i64 = db.owners().await?.iter().map(|(_, n)| n).sum();
        let pools = agents
            .counters
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.members == webs && p.generation > 0)
            .count();
        if held as usize == sites && pools == sites {
            still(db).await?;
            return Ok(start.elapsed());
        }
        if start.elapsed() > SETTLE_LIMIT {
            bail!("after {SETTLE_LIMIT:?} the conductors hold {held} of {sites} sites and {pools} splitters have a pool");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (up to [`STILL_LIMIT`]) until the plan's handovers are over: the same leases
/// and no pool written (no transaction) for three seconds in a row.
async fn still(db: &Database) -> Result<()> {
    let transactions = || {
        meter::statements()
            .iter()
            .filter(|((_, kind), _)| kind == "BEGIN")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let start = Instant::now();
    let mut last = (db.owners().await?, transactions());
    let mut still_for = 0;
    while still_for < 3 && start.elapsed() < STILL_LIMIT {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (db.owners().await?, transactions());
        still_for = if now == last { still_for + 1 } else { 0 };
        last = now;
    }
    Ok(())
}

/// The size of each site's time-series file under each conductor's state directory.
fn series_sizes(state: &Path, sites: usize) -> BTreeMap<(String, usize), u64> {
    let mut sizes = BTreeMap::new();
    for host in HOSTS {
        for i in 0..sites {
            let path: PathBuf = state
                .join(host)
                .join(autoscaler::conductor::timeseries::DIR_NAME)
                .join(format!("{}.csv", setup::site_name(i)));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            sizes.insert((host.to_owned(), i), size);
        }
    }
    sizes
}

/// Which hosts stepped each site between two snapshots of the time series.
fn stepped_by(
    before: &BTreeMap<(String, usize), u64>,
    after: &BTreeMap<(String, usize), u64>,
    sites: usize,
) -> Vec<Vec<String>> {
    (0..sites)
        .map(|i| {
            HOSTS
                .iter()
                .filter(|h| {
                    let key = (h.to_string(), i);
                    after.get(&key) > before.get(&key)
                })
                .map(|h| h.to_string())
                .collect()
        })
        .collect()
}

async fn steady(
    a: &HaBenchArgs,
    state: &Path,
    owners: &Owners,
    agents: &Agents,
    db: &Database,
    cloud: &autoscaler::driver::MemoryDriver,
) -> Result<Steady> {
    let c = &agents.counters;
    let sent = || {
        c.heartbeats.load(Ordering::Relaxed)
            + c.metrics.load(Ordering::Relaxed)
            + c.acks.load(Ordering::Relaxed)
    };
    let (cpu0, st0, sizes0, sent0, lists0) = (
        owners.cpu(),
        meter::statements(),
        series_sizes(state, a.sites),
        sent(),
        cloud.listings(),
    );
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (cpu1, st1, sizes1, sent1, lists1) = (
        owners.cpu(),
        meter::statements(),
        series_sizes(state, a.sites),
        sent(),
        cloud.listings(),
    );
    let seconds = wall.elapsed().as_secs_f64();
    let stepped = stepped_by(&sizes0, &sizes1, a.sites);
    Ok(Steady::new(
        seconds,
        (&cpu0, &cpu1),
        (&st0, &st1),
        &stepped,
        (sent1 - sent0) as f64 / seconds,
        (lists1 - lists0) as f64 / seconds,
        db.owners().await?,
    ))
}

/// Kills `victim` (no lease released) and waits until `survivor` holds every site and has
/// stepped each one since.
async fn failover(
    sites: usize,
    state: &Path,
    db: &Database,
    owners: &Owners,
    victim: Running,
    survivor: &Running,
) -> Result<Failover> {
    let held_before = db.owners().await?;
    let victim_host = victim.host.clone();
    let (cpu0, st0) = (owners.cpu(), meter::statements());
    let sizes0 = series_sizes(state, sites);
    let killed = Instant::now();
    victim.kill()?;
    let (mut all_held, mut all_stepped) = (None, None);
    while killed.elapsed() < FAILOVER_LIMIT && all_stepped.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = db.owners().await?;
        let by_survivor = held
            .iter()
            .find(|(h, _)| *h == survivor.host)
            .map_or(0, |(_, n)| *n);
        if all_held.is_none() && by_survivor as usize == sites {
            all_held = Some(killed.elapsed());
        }
        let stepped = stepped_by(&sizes0, &series_sizes(state, sites), sites);
        let survivor_stepped = stepped
            .iter()
            .filter(|hosts| hosts.contains(&survivor.host))
            .count();
        if all_held.is_some() && survivor_stepped == sites {
            all_stepped = Some(killed.elapsed());
        }
    }
    let (cpu1, st1) = (owners.cpu(), meter::statements());
    Ok(Failover::new(
        victim_host,
        held_before,
        all_held,
        all_stepped,
        killed.elapsed().as_secs_f64(),
        (&cpu0, &cpu1),
        (&st0, &st1),
        &survivor.host,
    ))
}

/// The secrets of the bench's message key file, for its simulated agents' keys.
fn configs_secrets(path: &Path) -> Result<autoscaler::messaging::signing::MessageSecrets> {
    Ok(autoscaler::messaging::signing::MessageSecrets::read(path)?)
}
