//! The conductor service: one loop over the broker's deliveries, the control tick, the
//! cloud's answers and shutdown.
//!
//! The [`Link`] supervisor owns the connection and forwards deliveries into two bounded
//! channels; this loop takes one message at a time ([`super::delivery`]), so a SIGTERM
//! observed between two `select!` turns always finds the command in hand finished,
//! replied to and acknowledged. Every `evaluation_interval` the [`Steering`] runs the
//! groups' rules, and also as soon as a splitter's metrics complete the evidence for a
//! scaling action ([`Group::acts_now`](super::group::Group::acts_now)).

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use lapin::message::Delivery;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::MissedTickBehavior,
};
use tracing::{info, warn};

use super::{
    api::TemplateRecord,
    delivery::{handle_request, take_telemetry, Reception},
    drop_log::DropLog,
    group_settings,
    handler::{Conductor, Identity},
    memory::Memory,
    notifier::Notifier,
    state::{StateError, VmRegistry},
    steer::{CloudEvent, Outlets, Steering},
};
use crate::{
    conf::Config,
    driver::{self, DriverError},
    messaging::{
        topology::RPC_CONDUCTOR, DropCounts, Link, LinkHandle, LinkState, QueueSpec, Subscription,
        Topology,
    },
    store::{Store, StoreError},
    template::metadata,
};

/// Requests waiting to be handled. The broker pushes at most one unacknowledged request
/// (prefetch 1), so a handful of slots is plenty.
const REQUEST_BACKLOG: usize = 8;
/// Requests forwarded here that the broker keeps waiting (the oldest dropped beyond).
const FORWARDED_BACKLOG: u32 = 64;
/// Telemetry waiting to be taken in: about a second of heartbeats from a thousand VMs.
/// When it is full the forwarder waits, and the broker's bounded queue drops the oldest.
const TELEMETRY_BACKLOG: usize = 1024;
/// Unacknowledged telemetry the broker may push at once.
const TELEMETRY_PREFETCH: u16 = 256;
/// How long shutdown waits for the link to close the connection.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Why the conductor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The database cannot be used (unreachable, no schema, a schema behind: `db sync`).
    #[error("[database] connection: {0}")]
    Store(#[from] StoreError),
    /// The VMs would get the conductor's own broker login (issue 17).
    #[error(transparent)]
    AgentLogin(#[from] crate::conf::AgentLoginError),
    /// The message key file (`[agent] message_key_file`) cannot be used.
    #[error("[agent] message_key_file: {0}")]
    MessageKey(#[from] crate::messaging::signing::KeyFileError),
    /// The broker refused the exchange's or a queue's declaration: what and what to do.
    #[error("{0}")]
    BrokerRefused(String),
}

/// The broker side of the service: the link, its task and stop signal, and the two
/// channels its consumers fill.
struct Connection {
    link: LinkHandle,
    task: JoinHandle<()>,
    /// Sent only after the loop has finished the request in hand: its reply and ack
    /// still need the connection.
    stop: watch::Sender<bool>,
    requests: mpsc::Receiver<Delivery>,
    telemetry: mpsc::Receiver<Delivery>,
}

/// Runs the conductor until `shutdown` turns true.
pub async fn run(config: &Config, shutdown: watch::Receiver<bool>) -> Result<(), ServiceError> {
    let driver = driver::from_config(config)?;
    run_with_driver(config, driver, shutdown).await
}

/// [`run`] on a cloud driver the caller built, rather than the one `[compute] driver`
/// names: for benchmarks that run several conductors on one in-memory cloud
/// ([`driver::MemoryDriver`], `autoscaler-sim ha-bench`).
pub async fn run_with_driver(
    config: &Config,
    driver: std::sync::Arc<dyn driver::CloudDriver>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let host = config.default.host.clone();
    let sender = format!("autoscaler-conductor.{host}");
    let topology = config.topology();
    // Before anything else: the VMs' user data must not carry the service's own login.
    let agents = config.agent.agent_url(&config.default.transport_url)?;
    if agents.service_login {
        warn!("[agent] allow_service_credentials = true: the VMs' user data carries a broker login of the conductor's own; anyone inside a VM can act as the operator (doc/security.md)");
    }
    // The secret the VMs' message keys come from (made at first start when unset).
    let secrets = config.agent.message_secrets(&config.default.state_path)?;
    let mut conductor = restore(config, driver.as_ref()).await?;
    let notifier = Notifier::from_config(config);
    let mut connection = connect(config, &topology, &notifier, &sender);
    info!(%host, exchange = %topology.exchange, broker = %config.default.transport_url, "autoscaler-conductor starting");
    for param in config.default.transport_url.unknown_query_params() {
        warn!(
            param,
            "transport_url query parameter not used by this service"
        );
    }
    let (mut steering, cloud_events) = Steering::new(
        driver,
        config.clone(),
        sender.clone(),
        topology.clone(),
        secrets.clone(),
    );
    let drops = DropCounts::default();
    let drop_log = DropLog::default();
    let rpc_allowed_users = config.rpc_allowed_users();
    info!(users = ?rpc_allowed_users, "requests are carried out for these broker users only");
    let rx = Reception {
        out: Outlets {
            link: &connection.link,
            notifier: &notifier,
        },
        drops: &drops,
        sender: &sender,
        host: &host,
        exchange: &topology.exchange,
        user: config
            .default
            .transport_url
            .hosts
            .first()
            .map(|h| h.username.as_str()),
        max_size: config.default.max_message_size,
        max_clock_skew: config.agent.max_clock_skew,
        drop_log: &drop_log,
        rpc_allowed_users: &rpc_allowed_users,
        secrets: &secrets,
    };
    let loop_state = Loop {
        requests: &mut connection.requests,
        telemetry: &mut connection.telemetry,
        cloud_events,
        link_state: connection.link.watch_state(),
        interval: config.conductor.evaluation_interval,
    };
    let refused = serve(loop_state, &mut conductor, &mut steering, &rx, shutdown).await;
    info!("autoscaler-conductor stopping");
    conductor.release_all().await;
    let _ = connection.stop.send(true);
    drop(connection.requests);
    drop(connection.telemetry);
    if tokio::time::timeout(CLOSE_PATIENCE, connection.task)
        .await
        .is_err()
    {
        warn!("the broker connection did not close in time");
    }
    info!("autoscaler-conductor stopped");
    refused.map_or(Ok(()), |reason| Err(ServiceError::BrokerRefused(reason)))
}

/// A restarted conductor carries on: its memory is the database (refused when its schema
/// is not this build's: `autoscaler-manage db sync`); groups the cloud shows that the
/// database lost are recorded from their VMs' metadata; the conductor then takes its
/// share of the groups, and each group rebuilds its view from the cloud at its first tick
/// (its policy adopts the VMs that exist: no duplicate boots).
async fn restore(
    config: &Config,
    driver: &dyn driver::CloudDriver,
) -> Result<Conductor, ServiceError> {
    let settings = group_settings(config);
    let store = Store::connect(&config.database_url(), &config.database.pool_settings()).await?;
    store.check_schema().await?;
    recover_from_cloud(
        driver,
        &store,
        config.conductor.max_vms_ceiling,
        config.conductor.list_timeout,
    )
    .await;
    let memory = Memory::new(
        store,
        config.default.host.clone(),
        config.conductor.lease_time,
        config.default.service_down_time,
    );
    let mut conductor = Conductor {
        identity: Identity {
            host: config.default.host.clone(),
            started_at: Utc::now(),
        },
        max_vms_ceiling: config.conductor.max_vms_ceiling,
        templates: BTreeMap::new(),
        vms: VmRegistry::default(),
        groups: BTreeMap::new(),
        memory,
        settings,
        received_requests: 0,
        received_telemetry: 0,
        sequences: Default::default(),
    };
    conductor.refresh().await;
    Ok(conductor)
}

/// Starts the link: the RPC queue, the conductor's telemetry queue and the notification
/// queues, each consumer forwarding into its bounded channel.
fn connect(config: &Config, topology: &Topology, notifier: &Notifier, sender: &str) -> Connection {
    let (request_tx, requests) = mpsc::channel(REQUEST_BACKLOG);
    let (telemetry_tx, telemetry) = mpsc::channel(TELEMETRY_BACKLOG);
    let queue_length = config.conductor.telemetry_queue_length;
    let subscriptions = vec![
        Subscription {
            queue: topology.conductor_rpc_queue(),
            spec: QueueSpec::lasting(topology.durability),
            bindings: vec![RPC_CONDUCTOR.to_owned()],
            prefetch: 1,
            ack: true,
            sender: request_tx.clone(),
        },
        // Requests another conductor took for a group this one owns (doc/ha.md).
        Subscription {
            queue: topology.conductor_host_rpc_queue(&config.default.host),
            // Lives while this conductor does; bounded like a telemetry queue.
            spec: QueueSpec::telemetry(FORWARDED_BACKLOG),
            bindings: vec![Topology::conductor_host_rpc_key(&config.default.host)],
            prefetch: 1,
            ack: true,
            sender: request_tx,
        },
        Subscription {
            queue: topology.conductor_telemetry_queue(&config.default.host),
            spec: QueueSpec::telemetry(queue_length.try_into().unwrap_or(u32::MAX)),
            // Bound with the keys of the groups steered here, as they are taken
            // (`bindings::TelemetryBindings`).
            bindings: Vec::new(),
            // Acknowledged, with a window: what the conductor has not taken stays on the
            // broker, where the queue's length bound drops the oldest. Without acks the
            // broker would push everything into this process's memory.
            prefetch: TELEMETRY_PREFETCH,
            ack: true,
            sender: telemetry_tx,
        },
    ];
    let mut link = Link::new(
        config.link_config(sender.to_owned()),
        topology.clone(),
        subscriptions,
    );
    for (queue, spec, bindings) in notifier.queues() {
        link = link.with_queue(queue, spec, bindings);
    }
    let (stop, link_stopped) = watch::channel(false);
    let (link, task) = link.spawn(link_stopped);
    Connection {
        link,
        task,
        stop,
        requests,
        telemetry,
    }
}

/// What the loop waits on besides shutdown.
struct Loop<'a> {
    requests: &'a mut mpsc::Receiver<Delivery>,
    telemetry: &'a mut mpsc::Receiver<Delivery>,
    cloud_events: mpsc::Receiver<CloudEvent>,
    /// Watched for the broker's refusal of a declaration.
    link_state: watch::Receiver<LinkState>,
    interval: Duration,
}

/// The one loop: requests first, then the cloud's answers, the tick, and telemetry. Ends
/// on shutdown, or with the broker's refusal of a declaration (what it says).
async fn serve(
    mut l: Loop<'_>,
    conductor: &mut Conductor,
    steering: &mut Steering,
    rx: &Reception<'_>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<String> {
    let mut ticks = tokio::time::interval(l.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return None,
            // No retry mends a refused declaration (an upgrade that changed
            // amqp_durable_queues): the operator must.
            reason = refusal(&mut l.link_state) => return Some(reason),
            Some(delivery) = l.requests.recv() => handle_request(delivery, conductor, rx).await,
            Some(event) = l.cloud_events.recv() => {
                // A listing steps its group, which judges silence: it must see every
                // heartbeat already here (after a slow step or a reconnect a backlog
                // waits, and a VM whose heartbeat sits in it is not silent).
                let mut backlog = 0;
                while backlog < TELEMETRY_BACKLOG {
                    let Ok(delivery) = l.telemetry.try_recv() else { break };
                    // Metrics that call for an action call again with the next
                    // message (a quarter of a second), or the tick comes.
                    take_telemetry(delivery, conductor, steering, rx).await;
                    backlog += 1;
                }
                steering.cloud_event(event, conductor, &rx.out).await;
            }
            _ = ticks.tick() => {
                // Which groups this conductor steers, from the database, then their
                // listings.
                conductor.refresh().await;
                steering.hear(conductor.groups.keys(), rx.out.link);
                steering.tick(conductor.groups.keys());
            }
            Some(delivery) = l.telemetry.recv() => {
                if let Some(group) = take_telemetry(delivery, conductor, steering, rx).await {
                    // The splitter's metrics complete the evidence for a scaling action,
                    // or a booted VM can join the pool: list and step that group now, not
                    // at the next tick (up to a second later; doc/policy.md). The ticks
                    // keep their pace: other groups and the leases depend on them.
                    steering.list(&group);
                }
            }
        }
    }
}

/// Resolves when the link reports that the broker refused a declaration: what it says.
async fn refusal(state: &mut watch::Receiver<LinkState>) -> String {
    let refused = state.wait_for(|s| matches!(s, LinkState::Refused(_))).await;
    match refused.as_deref() {
        Ok(LinkState::Refused(reason)) => reason.clone(),
        _ => "the broker link ended unexpectedly".to_owned(),
    }
}

/// The cloud is the source of truth: a group whose VMs carry our metadata but which the
/// database does not know (it was lost, or the conductor died between booting
/// and recording) is adopted with the template its VMs carry, so its VMs are neither
/// orphaned nor duplicated. A cloud that cannot be listed now is listed again by the
/// groups' ticks; only adoption waits for a later restart.
async fn recover_from_cloud(
    driver: &dyn driver::CloudDriver,
    store: &Store,
    max_vms_ceiling: u32,
    list_timeout: Duration,
) {
    let known: std::collections::BTreeSet<String> = match store.template_names().await {
        Ok(names) => names.into_iter().map(|(n, _)| n).collect(),
        Err(error) => {
            warn!(%error, "cannot read the templates; groups unknown to the database are not adopted");
            return;
        }
    };
    // A hung cloud must not keep the service from starting (issue 16, item 3).
    let listing = tokio::time::timeout(list_timeout, driver.list_all()).await;
    let vms = match listing {
        Ok(Ok(vms)) => vms,
        Err(_) => {
            warn!(timeout_s = list_timeout.as_secs_f64(), "the cloud did not list its VMs in time at start; groups unknown to the database are not adopted");
            return;
        }
        Ok(Err(error)) => {
            warn!(%error, "cannot list the cloud's VMs at start; groups unknown to the database are not adopted");
            return;
        }
    };
    let mut by_group: BTreeMap<&str, Vec<&driver::Vm>> = BTreeMap::new();
    for vm in &vms {
        if let Some(group) = vm.group() {
            by_group.entry(group).or_default().push(vm);
        }
    }
    for (group, vms) in by_group {
        if known.contains(group) {
            continue;
        }
        // The newest VM carries the template as last instantiated.
        let newest = vms
            .iter()
            .max_by_key(|vm| vm.created_at)
            .expect("grouped VMs");
        match metadata::from_metadata(&newest.metadata, max_vms_ceiling) {
            Ok(template) => {
                let record = TemplateRecord {
                    source: format!("cloud metadata of {}", newest.name),
                    instantiated_at: newest.created_at,
                    destroying: false,
                    template,
                };
                match store.insert_template(&record).await {
                    Ok(()) | Err(StoreError::Duplicate(_)) => warn!(
                        template = group,
                        vms = vms.len(),
                        "adopted a group the database did not know, from its VMs' metadata"
                    ),
                    Err(error) => warn!(%error, template = group, "cannot record an adopted group"),
                }
            }
            Err(error) => warn!(%error, template = group, vms = vms.len(),
                "VMs of a group the database does not know, without a usable template in their metadata: left alone; delete them with the cloud's own tools (openstack server delete)"),
        }
    }
}
