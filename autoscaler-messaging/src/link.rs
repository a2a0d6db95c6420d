//! The link to RabbitMQ: connecting with failover across the `transport_url` hosts,
//! surviving broker restarts and forced closes, and publishing with or without confirms.
//!
//! Two layers of recovery, because each covers what the other cannot:
//! 1. lapin's automatic recovery reconnects to the *same* broker and replays exchanges,
//!    queues, bindings, QoS and consumers; callers wait on
//!    [`lapin::Channel::wait_for_recovery`] and retry the operation.
//! 2. When lapin gives up (its backoff is short on purpose), the [`Link`] supervisor
//!    reconnects through the next host of the URL, declares the topology again and
//!    restarts its consumers.
//!
//! A [`Link`] runs as a task; [`LinkHandle`] publishes through whatever session is current
//! and reports the link's state, so the conductor can tell "my broker is down" from "the
//! VMs are silent".
//!
//! A broker that answers but refuses a declaration (`PRECONDITION_FAILED`: the exchange or
//! a queue exists with other arguments, such as another durability) is not down: retrying
//! cannot help until someone changes the broker or the configuration. The link reports it
//! as [`LinkState::Refused`] with what to do ([`topology::explain_refusal`]) and keeps
//! trying at the longest interval, so an agent recovers once the operator has acted; the
//! conductor stops on it instead (exit 1), where the operator sees it at once.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions},
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{sleep, timeout, Instant},
};
use tracing::{debug, error, info, warn};

use crate::{
    topology::{self, QueueSpec, Topology},
    TransportUrl,
};

/// How to reach the broker. Built from `[DEFAULT] transport_url` and
/// `[oslo_messaging_rabbit]`, or from an agent's user data.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: TransportUrl,
    /// AMQP heartbeat (seconds) when the URL asks for none; 0 disables.
    pub heartbeat: u16,
    /// Wait before the first reconnect attempt (oslo: `rabbit_retry_interval`).
    pub retry_interval: Duration,
    /// Added to the wait after each failed attempt (oslo: `rabbit_retry_backoff`).
    pub retry_backoff: Duration,
    /// Longest wait between attempts (oslo: `rabbit_interval_max`).
    pub interval_max: Duration,
    /// Shown in the RabbitMQ management UI and `rabbitmqctl list_connections`.
    pub connection_name: String,
}

impl LinkConfig {
    /// With oslo.messaging's defaults for everything but the URL.
    pub fn new(url: TransportUrl, connection_name: impl Into<String>) -> Self {
        LinkConfig {
            url,
            heartbeat: 60,
            retry_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_secs(2),
            interval_max: Duration::from_secs(30),
            connection_name: connection_name.into(),
        }
    }

    /// Wait before reconnect attempt `attempt` (0-based).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        (self.retry_interval + self.retry_backoff * attempt).min(self.interval_max)
    }
}

/// No broker of the URL could be reached. Names each host and its error, never a password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to {url}: {}", .failures.join("; "))]
pub struct ConnectError {
    pub url: String,
    pub failures: Vec<String>,
}

/// Connects to the first broker that answers, starting at host `start`; returns the
/// connection and the index of the host that answered.
pub async fn connect(
    config: &LinkConfig,
    start: usize,
    auto_recover: bool,
) -> Result<(Connection, usize), ConnectError> {
    let mut failures = Vec::new();
    let hosts = config.url.hosts.len();
    for offset in 0..hosts {
        let index = (start + offset) % hosts;
        let uri = config.url.amqp_uri(index, Some(config.heartbeat));
        let mut properties = ConnectionProperties::default()
            .with_connection_name(config.connection_name.as_str().into());
        if auto_recover {
            // Few, quick attempts against the same broker: past them the supervisor fails
            // over to the next host, which is the better bet when this one is down.
            let (min, max) = (config.retry_interval, config.interval_max);
            properties = properties
                .enable_auto_recover()
                .configure_backoff(move |b| {
                    b.with_min_delay(min).with_max_delay(max).with_max_times(3)
                });
        }
        match Connection::connect_uri(uri, properties).await {
            Ok(connection) => return Ok((connection, index)),
            Err(error) => failures.push(format!("{}: {error}", config.url.hosts[index])),
        }
    }
    Err(ConnectError {
        url: config.url.to_string(),
        failures,
    })
}

/// Where the link stands, as [`LinkHandle::state`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or reconnecting after a failure.
    Connecting,
    /// Connected to this broker (`user@host:port`), topology declared, consumers running.
    Up(String),
    /// A broker answered but refused a declaration (`PRECONDITION_FAILED`); the text says
    /// which object, why and what to do. The link keeps trying, every `interval_max`.
    Refused(String),
    /// The link was shut down.
    Closed,
}

/// Why a session could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionError {
    /// No broker answered, or the connection failed during the setup.
    Unreachable(String),
    /// The broker refused a declaration: what [`LinkState::Refused`] carries.
    Refused(String),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Unreachable(text) | SessionError::Refused(text) => f.write_str(text),
        }
    }
}

/// The broker's text when `error` is its refusal of a declaration (406
/// `PRECONDITION_FAILED`, which closes the channel).
pub fn refusal(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
            Some(amqp.get_message().to_string())
        }
        _ => None,
    }
}

/// A queue the link consumes, forwarding its deliveries to `sender`.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub queue: String,
    pub spec: QueueSpec,
    /// Routing keys bound to the queue on the exchange.
    pub bindings: Vec<String>,
    /// Unacknowledged deliveries the broker may push at once (AMQP QoS); with `ack`
    /// false the broker does not wait for acknowledgements at all.
    pub prefetch: u16,
    pub ack: bool,
    /// Where deliveries go. Bounded: a slow receiver slows the consumer, and the broker
    /// holds (or, for telemetry queues, drops the oldest of) what is not yet taken.
    pub sender: mpsc::Sender<Delivery>,
}

/// Errors from [`LinkHandle::publish`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: no connection within {0:?}")]
    Unavailable(Duration),
    #[error("broker refused the message (negative acknowledgement)")]
    Nacked,
    #[error("publish failed: {0}")]
    Failed(String),
    #[error("the link is closed")]
    Closed,
}

/// The current session's channels: one in confirm mode for what must not be lost, one
/// without confirms for perishable telemetry.
#[derive(Clone)]
struct Channels {
    confirmed: Channel,
    telemetry: Channel,
}

/// Publishes through the link and watches its state. Cheap to clone.
#[derive(Clone)]
pub struct LinkHandle {
    channels: watch::Receiver<Option<Channels>>,
    state: watch::Receiver<LinkState>,
}

/// A message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    /// Wait for the broker's confirm (and use persistent delivery). Without it the
    /// message is transient and fire-and-forget.
    pub confirm: bool,
    /// Per-message TTL; expired messages are discarded by the broker.
    pub ttl: Option<Duration>,
    /// Set on RPC replies: the request's correlation id.
    pub correlation_id: Option<&'a str>,
}

impl Outgoing<'_> {
    fn properties(&self) -> BasicProperties {
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(if self.confirm { 2 } else { 1 });
        if let Some(id) = self.correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        if let Some(ttl) = self.ttl {
            properties = properties.with_expiration(ttl.as_millis().max(1).to_string().into());
        }
        properties
    }
}

impl LinkHandle {
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// A receiver that changes with the link's state.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Publishes `message`, waiting up to `patience` for a connection and retrying once
    /// after a recovery. Returns only when the broker has it (confirmed) or handed it on
    /// (unconfirmed).
    pub async fn publish(
        &self,
        message: Outgoing<'_>,
        patience: Duration,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + patience;
        let mut channels = self.channels.clone();
        let mut last_error = None;
        for _attempt in 0..3 {
            let current = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                channels.wait_for(Option::is_some),
            )
            .await
            {
                Ok(Ok(current)) => current.clone().expect("waited for Some"),
                Ok(Err(_)) => return Err(PublishError::Closed),
                Err(_) => return Err(last_error.unwrap_or(PublishError::Unavailable(patience))),
            };
            let channel = if message.confirm {
                current.confirmed
            } else {
                current.telemetry
            };
            match publish_on(&channel, &message).await {
                Ok(()) => return Ok(()),
                Err(PublishOnError::Nacked) => return Err(PublishError::Nacked),
                Err(PublishOnError::Lapin(error)) => {
                    debug!(%error, "publish failed; waiting for recovery");
                    last_error = Some(PublishError::Failed(error.to_string()));
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match timeout(remaining, channel.wait_for_recovery(error)).await {
                        Ok(Ok(())) => continue,
                        // Not recoverable on this connection: the supervisor will replace
                        // the session; wait for it.
                        Ok(Err(_)) => sleep(Duration::from_millis(100)).await,
                        Err(_) => break,
                    }
                }
            }
        }
        Err(last_error.unwrap_or(PublishError::Unavailable(patience)))
    }
}

enum PublishOnError {
    Nacked,
    Lapin(lapin::Error),
}

async fn publish_on(channel: &Channel, message: &Outgoing<'_>) -> Result<(), PublishOnError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(message.exchange),
            ShortString::from(message.routing_key),
            BasicPublishOptions::default(),
            message.body,
            message.properties(),
        )
        .await
        .map_err(PublishOnError::Lapin)?;
    match confirm.await.map_err(PublishOnError::Lapin)? {
        Confirmation::Nack(_) => Err(PublishOnError::Nacked),
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
    }
}

/// The supervisor task's inputs.
pub struct Link {
    config: LinkConfig,
    topology: Topology,
    subscriptions: Vec<Subscription>,
    /// Queues declared and bound without a consumer here (e.g. notification queues that
    /// operators' tools read).
    queues: Vec<(String, QueueSpec, Vec<String>)>,
}

impl Link {
    pub fn new(config: LinkConfig, topology: Topology, subscriptions: Vec<Subscription>) -> Self {
        Link {
            config,
            topology,
            subscriptions,
            queues: Vec::new(),
        }
    }

    /// Also declares `queue` (bound with `bindings`) on every (re)connection.
    pub fn with_queue(mut self, queue: String, spec: QueueSpec, bindings: Vec<String>) -> Self {
        self.queues.push((queue, spec, bindings));
        self
    }

    /// Starts the supervisor; it runs until `shutdown` turns true, then closes the
    /// connection. The returned handle works as soon as the first session is up.
    pub fn spawn(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (LinkHandle, tokio::task::JoinHandle<()>) {
        let (channels_tx, channels_rx) = watch::channel(None);
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let task = tokio::spawn(self.supervise(channels_tx, state_tx, shutdown));
        (
            LinkHandle {
                channels: channels_rx,
                state: state_rx,
            },
            task,
        )
    }

    async fn supervise(
        self,
        channels_tx: watch::Sender<Option<Channels>>,
        state_tx: watch::Sender<LinkState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut host = 0;
        let mut attempt = 0u32;
        while !*shutdown.borrow() {
            let session = tokio::select! {
                session = self.open_session(host) => session,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (connection, channels, mut consumers, index) = match session {
                Ok(session) => session,
                Err(SessionError::Refused(reason)) => {
                    let delay = self.config.interval_max;
                    error!(%reason, retry_in = ?delay, "the broker refused a declaration");
                    let _ = state_tx.send(LinkState::Refused(reason));
                    host += 1;
                    tokio::select! {
                        _ = sleep(delay) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
                Err(SessionError::Unreachable(error)) => {
                    let delay = self.config.retry_delay(attempt);
                    warn!(%error, retry_in = ?delay, "broker unreachable");
                    attempt = attempt.saturating_add(1);
                    host += 1;
                    tokio::select! {
                        _ = sleep(delay) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
            };
            attempt = 0;
            host = index;
            let _ = channels_tx.send(Some(channels));
            let broker = self.config.url.hosts[index].to_string();
            info!(broker = %broker, "connected to the broker");
            let _ = state_tx.send(LinkState::Up(broker.clone()));
            let state = state_tx.clone();
            let mut events = connection.events_listener();
            // The session lives until a consumer gives up (lapin could not recover), the
            // connection reports a terminal state, or we are told to stop.
            let stopping = loop {
                tokio::select! {
                    ended = consumers.join_next(), if !consumers.is_empty() => {
                        match ended {
                            Some(Ok(Ok(()))) => continue,
                            Some(Ok(Err(error))) => { warn!(%error, broker = %broker, "consumer lost; reconnecting"); break false }
                            Some(Err(error)) => { warn!(%error, "consumer task failed; reconnecting"); break false }
                            None => continue,
                        }
                    }
                    event = events.next() => match event {
                        Some(lapin::Event::Connected) => { let _ = state.send(LinkState::Up(broker.clone())); }
                        Some(lapin::Event::Error(error)) => {
                            warn!(%error, broker = %broker, "broker connection error; recovering");
                            let _ = state.send(LinkState::Connecting);
                        }
                        Some(_) => {}
                        None => { warn!(broker = %broker, "broker connection ended; reconnecting"); break false }
                    },
                    _ = sleep(Duration::from_secs(1)) => {
                        let status = connection.status();
                        if status.errored() || status.closed() {
                            warn!(broker = %broker, "broker connection closed; reconnecting");
                            break false;
                        }
                    }
                    _ = shutdown.wait_for(|stop| *stop) => break true,
                }
            };
            let _ = channels_tx.send(None);
            let _ = state_tx.send(LinkState::Connecting);
            consumers.abort_all();
            if stopping {
                let _ = connection.close(200, "shutting down".into()).await;
                break;
            }
            let _ = timeout(
                Duration::from_secs(1),
                connection.close(320, "reconnecting".into()),
            )
            .await;
            host += 1;
        }
        let _ = channels_tx.send(None);
        let _ = state_tx.send(LinkState::Closed);
        debug!("link closed");
    }

    async fn open_session(
        &self,
        host: usize,
    ) -> Result<(Connection, Channels, JoinSet<lapin::Result<()>>, usize), SessionError> {
        let (connection, index) = connect(&self.config, host, true)
            .await
            .map_err(|e| SessionError::Unreachable(e.to_string()))?;
        let setup = async {
            let control = connection.create_channel().await?;
            self.topology.declare_exchange(&control).await?;
            for (queue, spec, bindings) in &self.queues {
                self.topology
                    .declare_queue(&control, queue, spec, bindings)
                    .await?;
            }
            let confirmed = connection.create_channel().await?;
            confirmed
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let telemetry = connection.create_channel().await?;
            let mut consumers = JoinSet::new();
            for sub in &self.subscriptions {
                let channel = connection.create_channel().await?;
                self.topology
                    .declare_queue(&channel, &sub.queue, &sub.spec, &sub.bindings)
                    .await?;
                if sub.ack {
                    channel
                        .basic_qos(sub.prefetch, BasicQosOptions::default())
                        .await?;
                }
                let consumer = channel
                    .basic_consume(
                        ShortString::from(sub.queue.as_str()),
                        ShortString::from(format!("{}.{}", self.config.connection_name, sub.queue)),
                        BasicConsumeOptions {
                            no_ack: !sub.ack,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                consumers.spawn(forward(consumer, channel, sub.sender.clone()));
            }
            Ok::<_, lapin::Error>((
                Channels {
                    confirmed,
                    telemetry,
                },
                consumers,
            ))
        };
        match setup.await {
            Ok((channels, consumers)) => Ok((connection, channels, consumers, index)),
            Err(error) => {
                let _ = connection.close(200, "setup failed".into()).await;
                let broker = &self.config.url.hosts[index];
                Err(match refusal(&error) {
                    Some(text) => SessionError::Refused(format!(
                        "{broker}: {}",
                        topology::explain_refusal(&text, self.topology.durability)
                    )),
                    None => SessionError::Unreachable(format!("setting up on {broker}: {error}")),
                })
            }
        }
    }
}

/// Forwards deliveries until the receiver goes away, riding through lapin's recoveries.
async fn forward(
    mut consumer: lapin::Consumer,
    channel: Channel,
    sender: mpsc::Sender<Delivery>,
) -> lapin::Result<()> {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(delivery) => {
                if sender.send(delivery).await.is_err() {
                    return Ok(());
                }
            }
            Err(error) => channel.wait_for_recovery(error).await?,
        }
    }
    // The stream ends when the consumer is cancelled, by us or by the broker (queue
    // deleted): either way this session no longer consumes, so let the supervisor know.
    Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer ended").into())
}
