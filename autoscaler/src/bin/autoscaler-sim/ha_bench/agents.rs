//! The simulated agents of `ha-bench`: every VM of the in-memory cloud publishes a
//! heartbeat each second, every site's splitter its metrics each second and an
//! acknowledgement of each pool update, over the real broker and in the agent's own
//! envelope, as the agent does (`autoscaler-agent/src/heartbeat.rs`, `splitter.rs`). One
//! broker connection for all of them, on a thread named `agents`, so its CPU time is
//! not counted as a conductor's. Messages are made by [`Agents::seal`] alone, where a
//! signature would be added.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use autoscaler::{
    driver::{MemoryDriver, Vm},
    messaging::{
        envelope, member_name, signing::MessageSecrets, Heartbeat, Link, LinkConfig, LinkHandle,
        MemberStats, Metrics, Outgoing, Payload, PoolAck, PoolOutcome, PoolUpdate, QueueSpec, Role,
        Stats, Subscription, Topology, TransportUrl,
    },
};
use chrono::Utc;
use lapin::{message::Delivery, types::FieldTable};
use tokio::sync::{mpsc, watch};

/// Each second's messages go out in this many slices, evenly spaced.
const SLICES: u32 = 20;
/// Telemetry's time to live, as the agent's default `[agent] telemetry_ttl`.
const TTL: Duration = Duration::from_secs(10);
/// The largest pool update the agents take.
const MAX_MESSAGE: usize = 1 << 20;

/// The last pool update a site's splitter received.
#[derive(Debug, Clone)]
pub struct PoolSeen {
    pub generation: u64,
    /// Its web VMs.
    pub members: usize,
}

/// What the agents did, shared with the bench.
#[derive(Debug, Default)]
pub struct Counters {
    pub heartbeats: AtomicU64,
    pub metrics: AtomicU64,
    pub acks: AtomicU64,
    /// Messages the link did not take (no connection, blocked).
    pub unsent: AtomicU64,
    /// The last pool update of each site.
    pub pools: Mutex<HashMap<String, PoolSeen>>,
}

/// The simulated agents, running on their own thread until [`Agents::stop`].
pub struct Agents {
    pub counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

/// A site as its agents know it, from the cloud.
#[derive(Debug, Default)]
struct Site {
    splitter: Option<(String, Option<IpAddr>)>,
    webs: Vec<(String, Option<IpAddr>)>,
}

/// What every task of the agents shares.
struct Shared {
    link: LinkHandle,
    exchange: String,
    counters: Arc<Counters>,
    /// Each site's splitter VM, by group.
    splitters: Mutex<HashMap<String, String>>,
    /// Each VM's key comes from these, as the conductors derive it.
    secrets: MessageSecrets,
    /// The next sequence number, shared by every simulated VM (each VM's rise).
    seq: AtomicU64,
}

impl Agents {
    /// Starts the agents of every VM `cloud` holds (looked at again every second).
    pub fn start(
        url: TransportUrl,
        topology: Topology,
        cloud: Arc<MemoryDriver>,
        secrets: MessageSecrets,
    ) -> Result<Agents> {
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let shared = counters.clone();
        let thread = std::thread::Builder::new()
            .name("agents".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("agents")
                    .thread_keep_alive(Duration::from_secs(3600))
                    .enable_all()
                    .build()
                    .context("cannot start the agents' runtime")?;
                runtime.block_on(run(url, topology, cloud, shared, secrets, stopped));
                runtime.shutdown_background();
                Ok(())
            })
            .context("cannot start the agents' thread")?;
        Ok(Agents {
            counters,
            stop,
            thread,
        })
    }

    /// Stops publishing and closes the connection.
    pub fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the agents' thread panicked"))?
    }
}

async fn run(
    url: TransportUrl,
    topology: Topology,
    cloud: Arc<MemoryDriver>,
    counters: Arc<Counters>,
    secrets: MessageSecrets,
    mut stopped: watch::Receiver<bool>,
) {
    let (pool_tx, pool_rx) = mpsc::channel(1024);
    let subscription = Subscription {
        queue: format!("{}.habench.splitters", topology.exchange),
        spec: QueueSpec::telemetry(100_000),
        bindings: vec!["pool.#".to_owned()],
        prefetch: 1024,
        ack: false,
        sender: pool_tx,
    };
    let exchange = topology.exchange.clone();
    let link = Link::new(
        LinkConfig::for_agent(url, "habench-agents"),
        topology,
        vec![subscription],
    );
    let (link, task) = link.spawn(stopped.clone());
    let shared = Arc::new(Shared {
        link,
        exchange,
        counters,
        splitters: Mutex::default(),
        secrets,
        seq: AtomicU64::new(Utc::now().timestamp_micros().max(1) as u64),
    });
    let answering = tokio::spawn(answer_pools(shared.clone(), pool_rx));
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => {}
        _ = publish(&shared, &cloud) => {}
    }
    answering.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// Heartbeats of every VM and metrics of every site, each once a second, in slices.
async fn publish(shared: &Shared, cloud: &MemoryDriver) {
    let slice = Duration::from_secs(1) / SLICES;
    let mut next = tokio::time::Instant::now();
    let mut sites = BTreeMap::new();
    for round in 0u64.. {
        for i in 0..SLICES {
            if i == 0 {
                sites = sites_of(&cloud.snapshot());
                let splitters = sites.iter().filter_map(|(group, site)| {
                    Some((group.clone(), site.splitter.as_ref()?.0.clone()))
                });
                *shared.splitters.lock().unwrap_or_else(|e| e.into_inner()) = splitters.collect();
            }
            let n = sites.len();
            let (from, to) = (
                n * i as usize / SLICES as usize,
                n * (i as usize + 1) / SLICES as usize,
            );
            for (group, site) in sites.iter().skip(from).take(to - from) {
                shared.site_second(group, site, round).await;
            }
            next += slice;
            tokio::time::sleep_until(next).await;
        }
    }
}

fn sites_of(vms: &[Vm]) -> BTreeMap<String, Site> {
    let mut sites: BTreeMap<String, Site> = BTreeMap::new();
    for vm in vms {
        let (Some(group), Some(role)) = (vm.group(), vm.role()) else {
            continue;
        };
        let site = sites.entry(group.to_owned()).or_default();
        let me = (vm.name.clone(), vm.address);
        match role {
            Role::Splitter => site.splitter = Some(me),
            Role::Web => site.webs.push(me),
        }
    }
    sites
}

impl Shared {
    /// One second of a site: a heartbeat from each VM, the splitter's metrics.
    async fn site_second(&self, group: &str, site: &Site, seq: u64) {
        let serving = |(name, address): &(String, Option<IpAddr>), role| Heartbeat {
            group: group.to_owned(),
            vm_id: name.clone(),
            role,
            seq,
            serving: Some(true),
            url: (role == Role::Splitter)
                .then(|| address.map(|a| format!("http://{a}/")))
                .flatten(),
            address: address.map(|a| a.to_string()),
        };
        for web in &site.webs {
            let key = Topology::heartbeat_key(group, &web.0);
            self.send(
                &key,
                &web.0,
                &serving(web, Role::Web),
                &self.counters.heartbeats,
            )
            .await;
        }
        let Some(splitter) = &site.splitter else {
            return;
        };
        let key = Topology::heartbeat_key(group, &splitter.0);
        self.send(
            &key,
            &splitter.0,
            &serving(splitter, Role::Splitter),
            &self.counters.heartbeats,
        )
        .await;
        let metrics = metrics(group, &splitter.0, &site.webs);
        self.send(
            &Topology::metrics_key(group),
            &splitter.0,
            &metrics,
            &self.counters.metrics,
        )
        .await;
    }

    /// The message `vm` sends, signed with its key, as its agent would.
    fn seal<P: Payload>(&self, vm: &str, payload: &P) -> (Vec<u8>, FieldTable) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let sender = format!("autoscaler-agent.{vm}");
        let body = envelope::encode_seq(&sender, Utc::now(), Some(seq), payload);
        let headers = self.secrets.vm_key(vm).headers(vm, &body);
        (body, headers)
    }

    async fn send<P: Payload>(&self, key: &str, vm: &str, payload: &P, counter: &AtomicU64) {
        let (body, headers) = self.seal(vm, payload);
        let message = Outgoing {
            exchange: &self.exchange,
            routing_key: key,
            body: &body,
            confirm: false,
            ttl: Some(TTL),
            correlation_id: None,
            headers: Some(&headers),
        };
        match self.link.publish(message, Duration::ZERO).await {
            Ok(()) => counter.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.unsent.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A quiet second of a site: ten requests per web VM, 50 ms each.
fn metrics(group: &str, splitter: &str, webs: &[(String, Option<IpAddr>)]) -> Metrics {
    let stats = |requests| Stats {
        requests,
        errors: 0,
        mean: 0.05,
        p50: 0.05,
        p95: 0.06,
        p99: 0.07,
        max: 0.08,
    };
    Metrics {
        group: group.to_owned(),
        vm_id: splitter.to_owned(),
        start: Utc::now() - chrono::TimeDelta::seconds(1),
        interval: 1.0,
        site: stats(10 * webs.len() as u64),
        members: webs
            .iter()
            .map(|(name, _)| MemberStats {
                member: member_name(name),
                stats: stats(10),
                busy: Some(0),
            })
            .collect(),
        malformed_lines: 0,
        modjk_messages: 0,
    }
}

/// Each site's splitter applies every pool update and acknowledges it.
async fn answer_pools(shared: Arc<Shared>, mut updates: mpsc::Receiver<Delivery>) {
    while let Some(delivery) = updates.recv().await {
        let Some(Ok(update)) = autoscaler::messaging::Envelope::decode(&delivery.data, MAX_MESSAGE)
            .ok()
            .as_ref()
            .and_then(|e| e.payload_as::<PoolUpdate>())
        else {
            continue;
        };
        let group = update.payload.group.clone();
        shared
            .counters
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                group.clone(),
                PoolSeen {
                    generation: update.payload.generation,
                    members: update.payload.members.len(),
                },
            );
        let splitter = shared
            .splitters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned();
        let Some(splitter) = splitter else { continue };
        let ack = PoolAck {
            group: group.clone(),
            vm_id: splitter.clone(),
            generation: update.payload.generation,
            outcome: PoolOutcome::Applied,
        };
        let key = Topology::pool_ack_key(&group);
        shared
            .send(&key, &splitter, &ack, &shared.counters.acks)
            .await;
    }
}
