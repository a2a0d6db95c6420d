//! The conductor service: one loop over the broker's deliveries, the control tick, the
//! cloud's answers and shutdown.
//!
//! The [`Link`] supervisor owns the connection and forwards deliveries into two bounded
//! channels; this loop takes one message at a time, so a SIGTERM observed between two
//! `select!` turns always finds the command in hand finished, replied to and
//! acknowledged. Every `evaluation_interval` the [`Steering`] runs the groups' rules.

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
};
use tokio::{
    sync::{mpsc, watch},
    time::MissedTickBehavior,
};
use tracing::{debug, info, warn};

use super::{
    api::{Request, TemplateRecord},
    group::{Group, GroupSettings},
    handler::{Conductor, Identity},
    notifier::Notifier,
    state::{StateError, TemplateStore, VmRegistry},
    steer::Steering,
};
use crate::{
    conf::Config,
    driver::{self, DriverError},
    messaging::{
        rpc::{RemoteError, ReplyTo, RpcReply},
        topology::RPC_CONDUCTOR,
        DropCounts, DropReason, Envelope, Heartbeat, Link, LinkHandle, LinkState, Metrics, PoolAck,
        QueueSpec, Subscription,
    },
    template::metadata,
};

/// Requests waiting to be handled. The broker pushes at most one unacknowledged request
/// (prefetch 1), so a handful of slots is plenty.
const REQUEST_BACKLOG: usize = 8;
/// Telemetry waiting to be taken in: about a second of heartbeats from a thousand VMs.
/// When it is full the forwarder waits, and the broker's bounded queue drops the oldest.
const TELEMETRY_BACKLOG: usize = 1024;
/// Unacknowledged telemetry the broker may push at once.
const TELEMETRY_PREFETCH: u16 = 256;
/// How long a reply may wait for the broker.
const REPLY_PATIENCE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the link to close the connection.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Why the conductor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The broker refused the exchange's or a queue's declaration: what and what to do.
    #[error("{0}")]
    BrokerRefused(String),
}

/// Runs the conductor until `shutdown` turns true.
pub async fn run(config: &Config, shutdown: watch::Receiver<bool>) -> Result<(), ServiceError> {
    let host = config.default.host.clone();
    let sender = format!("autoscaler-conductor.{host}");
    let topology = config.topology();
    let driver = driver::from_config(config)?;
    let settings = GroupSettings::from_config(config);
    let mut templates = TemplateStore::open(&config.default.state_path)?;
    recover_from_cloud(
        driver.as_ref(),
        &mut templates,
        config.conductor.max_vms_ceiling,
    )
    .await;
    // A restarted conductor carries on: every recorded template gets its group back, and
    // the group rebuilds its view from the cloud at the first tick (its policy adopts the
    // VMs that exist: no duplicate boots).
    let groups = templates
        .all()
        .map(|r| {
            let group = Group::new(r.template.clone(), r.destroying, settings);
            (r.template.name().to_owned(), group)
        })
        .collect();
    let mut conductor = Conductor {
        identity: Identity {
            host: host.clone(),
            started_at: Utc::now(),
        },
        max_vms_ceiling: config.conductor.max_vms_ceiling,
        templates,
        vms: VmRegistry::default(),
        groups,
        settings,
        metrics: Default::default(),
        received_requests: 0,
        received_telemetry: 0,
    };
    let notifier = Notifier::from_config(config);

    let (request_tx, mut requests) = mpsc::channel(REQUEST_BACKLOG);
    let (telemetry_tx, mut telemetry) = mpsc::channel(TELEMETRY_BACKLOG);
    let subscriptions = vec![
        Subscription {
            queue: topology.conductor_rpc_queue(),
            spec: QueueSpec::lasting(topology.durability),
            bindings: vec![RPC_CONDUCTOR.to_owned()],
            prefetch: 1,
            ack: true,
            sender: request_tx,
        },
        Subscription {
            queue: topology.conductor_telemetry_queue(&host),
            spec: QueueSpec::telemetry(
                config
                    .conductor
                    .telemetry_queue_length
                    .try_into()
                    .unwrap_or(u32::MAX),
            ),
            bindings: vec![
                "heartbeat.#".to_owned(),
                "metrics.#".to_owned(),
                "pool-ack.#".to_owned(),
            ],
            // Acknowledged, with a window: what the conductor has not taken stays on the
            // broker, where the queue's length bound drops the oldest. Without acks the
            // broker would push everything into this process's memory.
            prefetch: TELEMETRY_PREFETCH,
            ack: true,
            sender: telemetry_tx,
        },
    ];
    let mut link = Link::new(
        config.link_config(sender.clone()),
        topology.clone(),
        subscriptions,
    );
    for (queue, spec, bindings) in notifier.queues() {
        link = link.with_queue(queue, spec, bindings);
    }
    // The link gets its own stop signal, sent only after the loop below has finished the
    // request in hand: its reply and ack still need the connection.
    let (stop_link, link_stopped) = watch::channel(false);
    let (link, link_task) = link.spawn(link_stopped);
    let max_size = config.default.max_message_size;
    let drops = DropCounts::default();
    info!(%host, exchange = %topology.exchange, broker = %config.default.transport_url, "autoscaler-conductor starting");
    for param in config.default.transport_url.unknown_query_params() {
        warn!(
            param,
            "transport_url query parameter not used by this service"
        );
    }

    let (mut steering, mut cloud_events) =
        Steering::new(driver, config.clone(), sender.clone(), topology.clone());
    let mut ticks = tokio::time::interval(config.conductor.evaluation_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown_rx = shutdown.clone();
    let mut link_state = link.watch_state();
    let refused = loop {
        tokio::select! {
            biased;
            _ = shutdown_rx.wait_for(|stop| *stop) => break None,
            // No retry mends a refused declaration (an upgrade that changed
            // amqp_durable_queues): the operator must.
            reason = refusal(&mut link_state) => break Some(reason),
            Some(delivery) = requests.recv() => {
                handle_request(&mut conductor, &link, &notifier, &drops, &sender, max_size, delivery).await;
            }
            Some(event) = cloud_events.recv() => {
                steering.cloud_event(event, &mut conductor, &link, &notifier).await;
            }
            _ = ticks.tick() => {
                // The tick judges silence: it must see every heartbeat already here (after a
                // slow tick or a reconnect a backlog waits, and a VM whose heartbeat sits in
                // it is not silent).
                let mut backlog = 0;
                while backlog < TELEMETRY_BACKLOG {
                    let Ok(delivery) = telemetry.try_recv() else { break };
                    take_telemetry(delivery, &mut conductor, &mut steering, &link, &notifier, &drops, max_size).await;
                    backlog += 1;
                }
                steering.tick(&mut conductor, &link, &notifier, Utc::now()).await;
            }
            Some(delivery) = telemetry.recv() => {
                take_telemetry(delivery, &mut conductor, &mut steering, &link, &notifier, &drops, max_size).await;
            }
        }
    };
    info!("autoscaler-conductor stopping");
    drop(link_state);
    let _ = stop_link.send(true);
    drop(requests);
    drop(telemetry);
    if tokio::time::timeout(CLOSE_PATIENCE, link_task)
        .await
        .is_err()
    {
        warn!("the broker connection did not close in time");
    }
    info!("autoscaler-conductor stopped");
    refused.map_or(Ok(()), |reason| Err(ServiceError::BrokerRefused(reason)))
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
/// state file does not know (the state was lost, or the conductor died between booting
/// and recording) is adopted with the template its VMs carry, so its VMs are neither
/// orphaned nor duplicated. A cloud that cannot be listed now is listed again by the
/// groups' ticks; only adoption waits for a later restart.
async fn recover_from_cloud(
    driver: &dyn driver::CloudDriver,
    templates: &mut TemplateStore,
    max_vms_ceiling: u32,
) {
    let vms = match driver.list_all().await {
        Ok(vms) => vms,
        Err(error) => {
            warn!(%error, "cannot list the cloud's VMs at start; groups unknown to the state file are not adopted");
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
        if templates.get(group).is_some() {
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
                match templates.insert(record) {
                    Ok(()) => warn!(
                        template = group,
                        vms = vms.len(),
                        "adopted a group the state file did not know, from its VMs' metadata"
                    ),
                    Err(error) => warn!(%error, template = group, "cannot record an adopted group"),
                }
            }
            Err(error) => warn!(%error, template = group, vms = vms.len(),
                "VMs of a group the state file does not know, without a usable template in their metadata: left alone; delete them with the cloud's own tools (openstack server delete)"),
        }
    }
}

/// Takes in one heartbeat, metrics message or pool acknowledgement, and acknowledges it.
async fn take_telemetry(
    delivery: Delivery,
    conductor: &mut Conductor,
    steering: &mut Steering,
    link: &LinkHandle,
    notifier: &Notifier,
    drops: &DropCounts,
    max_size: usize,
) {
    match decode_telemetry(&delivery.data, max_size) {
        Ok(Telemetry::Heartbeat(heartbeat)) => conductor.heard(heartbeat, Utc::now()),
        Ok(Telemetry::Metrics(metrics)) => {
            conductor.received_telemetry += 1;
            steering.metrics(&metrics);
            conductor.metrics.insert(metrics.group.clone(), metrics);
        }
        Ok(Telemetry::PoolAck(ack)) => {
            conductor.received_telemetry += 1;
            steering.pool_ack(ack, link, notifier).await;
        }
        Err(reason) => {
            drops.record(&reason);
            warn!(routing_key = %delivery.routing_key, %reason, "dropped a message");
        }
    }
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        debug!(%error, "telemetry ack failed (the channel was replaced)");
    }
}

/// What the telemetry queue carries.
#[derive(Debug)]
pub enum Telemetry {
    Heartbeat(Heartbeat),
    Metrics(Metrics),
    PoolAck(PoolAck),
}

/// Reads one telemetry message as the conductor's intake does (public for the
/// simulator's intake benchmark).
pub fn decode_telemetry(data: &[u8], max_size: usize) -> Result<Telemetry, DropReason> {
    let raw = Envelope::decode(data, max_size)?;
    if let Some(heartbeat) = raw.payload_as::<Heartbeat>() {
        return heartbeat.map(|e| Telemetry::Heartbeat(e.payload));
    }
    if let Some(metrics) = raw.payload_as::<Metrics>() {
        return metrics.map(|e| Telemetry::Metrics(e.payload));
    }
    if let Some(ack) = raw.payload_as::<PoolAck>() {
        return ack.map(|e| Telemetry::PoolAck(e.payload));
    }
    Err(raw.unknown())
}

/// The request's age in milliseconds when it is older than its AMQP expiration (the
/// CLI's timeout). Relies on the hosts' clocks agreeing, as OpenStack does (NTP).
fn expired(
    delivery: &Delivery,
    sent: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
) -> Option<i64> {
    let ttl_ms: i64 = delivery
        .properties
        .expiration()
        .as_ref()?
        .as_str()
        .parse()
        .ok()?;
    let age_ms = (now - sent).num_milliseconds();
    (age_ms > ttl_ms).then_some(age_ms)
}

fn broker_of(link: &LinkHandle) -> String {
    match link.state() {
        LinkState::Up(broker) => broker,
        LinkState::Connecting => "(reconnecting)".to_owned(),
        LinkState::Refused(_) => "(refused)".to_owned(),
        LinkState::Closed => "(closed)".to_owned(),
    }
}

/// Decodes, answers and acknowledges one request. A request that cannot be read is
/// counted, answered with an `invalid` error when it names a reply address, and rejected
/// without requeueing (it would fail the same way again).
async fn handle_request(
    conductor: &mut Conductor,
    link: &LinkHandle,
    notifier: &Notifier,
    drops: &DropCounts,
    sender: &str,
    max_size: usize,
    delivery: Delivery,
) {
    let reply_to = ReplyTo::of(&delivery);
    let decoded = Envelope::decode(&delivery.data, max_size).and_then(|raw| {
        match raw.payload_as::<Request>() {
            Some(request) => request,
            None => Err(raw.unknown()),
        }
    });
    let request = match decoded {
        Ok(request) => request,
        Err(reason) => {
            drops.record(&reason);
            warn!(%reason, "dropped a request");
            if let Some(reply_to) = &reply_to {
                let reply = RpcReply::Error(RemoteError {
                    kind: "invalid".into(),
                    message: format!("the conductor could not read the request: {reason}"),
                });
                if let Err(error) = reply_to.send(link, sender, reply, REPLY_PATIENCE).await {
                    warn!(%error, "could not answer an unreadable request");
                }
            }
            if let Err(error) = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
            {
                debug!(%error, "reject failed (the channel was replaced; the broker requeues)");
            }
            return;
        }
    };
    debug!(from = %request.sender, request = ?request.payload, "request");
    if let Some(age) = expired(&delivery, request.time, Utc::now()) {
        // The CLI has given up and told its operator so; carrying the request out now
        // would do what the operator was told did not happen.
        warn!(
            age_ms = age,
            "request older than its time-to-live; not carried out"
        );
        if let Some(reply_to) = &reply_to {
            let reply = RpcReply::Error(RemoteError {
                kind: "expired".into(),
                message: format!("the request expired before the conductor took it ({age} ms old)"),
            });
            let _ = reply_to.send(link, sender, reply, REPLY_PATIENCE).await;
        }
        if let Err(error) = delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
        {
            debug!(%error, "reject failed");
        }
        return;
    }
    let handled = conductor.handle(
        request.payload,
        Utc::now(),
        &broker_of(link),
        drops.snapshot(),
    );
    if let RpcReply::Error(e) = &handled.reply {
        info!(kind = %e.kind, message = %e.message, "request refused");
    }
    if let Some(reply_to) = reply_to {
        if let Err(error) = reply_to
            .send(link, sender, handled.reply, REPLY_PATIENCE)
            .await
        {
            warn!(%error, "could not send a reply");
        }
    }
    for event in handled.events {
        notifier.notify(link, event).await;
    }
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        debug!(%error, "ack failed (the channel was replaced; the broker redelivers)");
    }
}
