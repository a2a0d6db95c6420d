//! The link to RabbitMQ: connecting with failover across the `transport_url` hosts,
//! surviving broker restarts, forced closes and resource alarms, and publishing with or
//! without confirms.
//!
//! **One layer of recovery, the [`Link`] supervisor.** It opens a *session* (a connection,
//! the topology declared, a channel per use and the consumers) and, when the session
//! breaks for any reason, throws all of it away and opens a new one, starting at the next
//! host of the URL. lapin's own automatic recovery stays off, because in lapin 4.12 it can
//! get stuck for good: when its reconnect attempts run out while the broker is still down
//! (`rabbitmqctl stop_app` for 10 s outlasts them), its I/O thread returns
//! (`io_loop.rs`: `block_on(connect)?`) without marking the connection failed. The status
//! stays `Reconnecting`, no `Event::Error` is sent and the notifiers
//! `Channel::wait_for_recovery` waits on never fire, so nothing on the client can tell
//! that the connection is gone (issue 16: after a broker restart neither the conductor
//! nor any agent came back). Without auto-recovery every failure is final for its
//! connection (status `Error` or `Closed`, `Event::Error`, the consumers' streams end),
//! which the supervisor sees.
//!
//! **Reconnecting.** While no broker of the URL listens (every connection refused), the
//! link tries again at most every [`LISTEN_RETRY`]: a refused connection costs the broker
//! nothing, and the link is back within about a second of the broker's return. A broker
//! that answers but fails the handshake or the set-up gets oslo's backoff
//! (`rabbit_retry_interval`, `rabbit_retry_backoff`, `rabbit_interval_max`; an agent's
//! waits stop at [`AGENT_INTERVAL_MAX`]). Each wait is drawn between half and all of its
//! length, so that a fleet of agents does not reconnect in step.
//!
//! **Resource alarms.** Under a memory or disk alarm the broker stops reading from the
//! connections that publish and tells them so (`connection.blocked`); lapin then writes
//! nothing at all on that connection. The link reports [`LinkState::Blocked`], and
//! [`LinkHandle::publish`] hands lapin nothing while blocked: telemetry fails at once
//! ([`PublishError::Blocked`]), a confirmed message waits for the unblock within its
//! patience. Nothing piles up in memory, and the conductor does not mistake the silence
//! of blocked agents for dead VMs: a blocked link is not [`LinkState::Up`], and `Up`
//! carries since when, so a block or a reconnect between two ticks is seen too.
//!
//! **Refused declarations.** A broker that answers but refuses a declaration
//! (`PRECONDITION_FAILED`: the exchange or a queue exists with other arguments, such as
//! the other durability) is not down: retrying cannot help until someone changes the
//! broker or the configuration. The link reports it as [`LinkState::Refused`] with what
//! to do ([`topology::explain_refusal`]) and keeps trying at the longest interval, so an
//! agent recovers once the operator has acted; the conductor stops on it instead (exit
//! 1), where the operator sees it at once.

use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lapin::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueBindOptions,
    },
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{sleep, timeout, timeout_at, Instant, MissedTickBehavior},
};
use tracing::{debug, error, info, warn};

/// What a [`Subscription`] hands over: the agent names it without depending on lapin.
pub use lapin::message::Delivery;

use crate::{
    topology::{self, QueueSpec, Topology},
    TransportUrl,
};

/// The longest wait between connection attempts while no broker of the URL listens.
pub const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// An agent's longest wait between attempts when a broker answers but the connection
/// fails: a few seconds, so that the conductor's grace after its own link returns
/// (`[conductor] heartbeat_timeout`) covers the agents' return.
pub const AGENT_INTERVAL_MAX: Duration = Duration::from_secs(3);
/// At least this long for a message handed to lapin to be written (and confirmed),
/// whatever the caller's patience: a caller that waits for no connection (patience 0)
/// still sends on a connection that is there.
const SEND_PATIENCE: Duration = Duration::from_secs(1);
/// How long closing a connection may take: a blocked or broken one cannot send its close.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);
/// How often the supervisor also reads the session's status; lapin's events are the main
/// signal, this catches a close that sends none.
const STATUS_POLL: Duration = Duration::from_millis(500);

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
    /// The largest AMQP frame this side proposes (bytes; the broker may lower it);
    /// `None`: the broker's (RabbitMQ: 128 KiB). lapin keeps a receive and a
    /// send buffer of 32 frames each, touched in full: 2 × 4 MiB at 128 KiB, which was
    /// half of the agent's resident memory (doc/agent.md).
    pub frame_max: Option<u32>,
}

/// The agent's `frame_max`: its messages (heartbeats, metrics, acknowledgements; pool
/// updates of at most 1 MiB, sent in several frames) need no large frames, and lapin's
/// buffers are then 2 × 512 KiB.
pub const AGENT_FRAME_MAX: u32 = 16 * 1024;

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
            frame_max: None,
        }
    }

    /// An agent's: waits of 1, 2, 3, 3 ... s ([`AGENT_INTERVAL_MAX`]) rather than oslo's
    /// 30 s at most, and frames of at most [`AGENT_FRAME_MAX`].
    pub fn for_agent(url: TransportUrl, connection_name: impl Into<String>) -> Self {
        LinkConfig {
            retry_backoff: Duration::from_secs(1),
            interval_max: AGENT_INTERVAL_MAX,
            frame_max: Some(AGENT_FRAME_MAX),
            ..LinkConfig::new(url, connection_name)
        }
    }

    /// Wait before reconnect attempt `attempt` (0-based), oslo's schedule.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        (self.retry_interval + self.retry_backoff * attempt).min(self.interval_max)
    }

    /// Longest wait after `attempt` failed rounds (0-based): while nobody listens, at most
    /// [`LISTEN_RETRY`] (and `retry_interval`); otherwise [`LinkConfig::retry_delay`].
    pub fn reconnect_delay(&self, attempt: u32, nobody_listening: bool) -> Duration {
        if nobody_listening {
            self.retry_interval.min(LISTEN_RETRY)
        } else {
            self.retry_delay(attempt)
        }
    }
}

/// `delay` scaled by a factor from 0.5 to 1, uniform in `random`.
fn jittered(delay: Duration, random: u64) -> Duration {
    delay.mul_f64(0.5 + 0.5 * (random as f64 / u64::MAX as f64))
}

/// A random number for the jitter, without a dependency: the standard library seeds each
/// `RandomState` with fresh random keys.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// No broker of the URL could be reached. Names each host and its error, never a password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to {url}: {}", .failures.join("; "))]
pub struct ConnectError {
    pub url: String,
    pub failures: Vec<String>,
    /// Every host refused the TCP connection: no broker listens there now.
    pub nobody_listening: bool,
}

/// Connects to the first broker that answers, starting at host `start`; returns the
/// connection and the index of the host that answered. One attempt per host, without
/// lapin's automatic recovery (see the module's documentation).
pub async fn connect(
    config: &LinkConfig,
    start: usize,
) -> Result<(Connection, usize), ConnectError> {
    let mut failures = Vec::new();
    let mut nobody_listening = true;
    let hosts = config.url.hosts.len();
    for offset in 0..hosts {
        let index = (start + offset) % hosts;
        let mut uri = config.url.amqp_uri(index, Some(config.heartbeat));
        uri.query.frame_max = config.frame_max;
        let properties = ConnectionProperties::default()
            .with_connection_name(config.connection_name.as_str().into());
        match Connection::connect_uri(uri, properties).await {
            Ok(connection) => return Ok((connection, index)),
            Err(error) => {
                nobody_listening &= refused(&error);
                failures.push(format!("{}: {error}", config.url.hosts[index]));
            }
        }
    }
    Err(ConnectError {
        url: config.url.to_string(),
        failures,
        nobody_listening,
    })
}

/// The TCP connection was refused: nothing listens on the port.
fn refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::IOError(e)
        if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Where the link stands, as [`LinkHandle::state`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or reconnecting after a failure.
    Connecting,
    /// Connected to `broker` (`user@host:port`), topology declared, consumers running,
    /// publishing allowed; without a break (a block included) since `since`.
    Up {
        broker: String,
        since: DateTime<Utc>,
    },
    /// Connected to `broker`, which blocks this connection's publishing (a memory or disk
    /// alarm: `connection.blocked`): deliveries may still arrive, nothing leaves.
    Blocked { broker: String },
    /// A broker answered but refused a declaration (`PRECONDITION_FAILED`); the text says
    /// which object, why and what to do. The link keeps trying, at its longest interval.
    Refused(String),
    /// The link was shut down.
    Closed,
}

impl LinkState {
    /// The broker connected to, blocked or not.
    pub fn broker(&self) -> Option<&str> {
        match self {
            LinkState::Up { broker, .. } | LinkState::Blocked { broker } => Some(broker),
            LinkState::Connecting | LinkState::Refused(_) | LinkState::Closed => None,
        }
    }

    /// Since when the link has been up, when it is.
    pub fn up_since(&self) -> Option<DateTime<Utc>> {
        match self {
            LinkState::Up { since, .. } => Some(*since),
            _ => None,
        }
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
    #[error("the broker blocks publishing (memory or disk alarm)")]
    Blocked,
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
    /// Which session they belong to (1 for the first): a publish that failed waits for
    /// another one.
    generation: u64,
    /// For declarations ([`LinkHandle::declare_queue`]).
    control: Channel,
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
    /// AMQP headers: an agent's signature ([`crate::signing`]), or the conductor's on a
    /// pool update.
    pub headers: Option<&'a FieldTable>,
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
        if let Some(headers) = self.headers {
            properties = properties.with_headers(headers.clone());
        }
        properties
    }
}

impl LinkHandle {
    /// Publishes a message received from the broker on to `routing_key` of `exchange`
    /// with the `properties` given (a request forwarded to the conductor that owns its
    /// group keeps its reply address and correlation id), confirmed, within `patience`.
    pub async fn forward(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        patience: Duration,
    ) -> Result<(), PublishError> {
        let current = self.session(patience).await?;
        let published = async {
            let confirm = current
                .confirmed
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?;
            confirm.await
        };
        match timeout(patience, published).await {
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(PublishError::Failed(error.to_string())),
            Err(_) => Err(PublishError::Unavailable(patience)),
        }
    }

    /// The current session's channels, waiting up to `patience` for one.
    async fn session(&self, patience: Duration) -> Result<Channels, PublishError> {
        let mut channels = self.channels.clone();
        let current = match timeout(patience, channels.wait_for(Option::is_some)).await {
            Ok(Ok(current)) => current.clone().expect("waited for Some"),
            Ok(Err(_)) => return Err(PublishError::Closed),
            Err(_) => return Err(PublishError::Unavailable(patience)),
        };
        Ok(current)
    }

    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// A receiver that changes with the link's state.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Publishes `message`, waiting up to `patience` for a connection (and, for a
    /// confirmed message, for the broker to unblock), and once more on the next session
    /// when it fails on one. Returns only when the broker has it (confirmed) or handed it
    /// on (unconfirmed). While the broker blocks publishing, telemetry fails at once: a
    /// blocked connection writes nothing, and what it was given would pile up. A message
    /// on its way when the block lands fails at once too ([`PublishError::Blocked`]),
    /// though lapin still sends it after the unblock.
    pub async fn publish(
        &self,
        message: Outgoing<'_>,
        patience: Duration,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + patience;
        let mut channels = self.channels.clone();
        let mut state = self.state.clone();
        let mut failed_on = None;
        let mut last_error = None;
        loop {
            let session =
                channels.wait_for(|c| c.as_ref().is_some_and(|c| Some(c.generation) != failed_on));
            let current = match timeout_at(deadline, session).await {
                Ok(Ok(current)) => current.clone().expect("waited for Some"),
                Ok(Err(_)) => return Err(PublishError::Closed),
                Err(_) => return Err(last_error.unwrap_or(PublishError::Unavailable(patience))),
            };
            if matches!(*state.borrow(), LinkState::Blocked { .. }) {
                if !message.confirm {
                    return Err(PublishError::Blocked);
                }
                let unblocked = state.wait_for(|s| !matches!(s, LinkState::Blocked { .. }));
                match timeout_at(deadline, unblocked).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(_)) => return Err(PublishError::Closed),
                    Err(_) => return Err(PublishError::Blocked),
                }
            }
            let channel = if message.confirm {
                &current.confirmed
            } else {
                &current.telemetry
            };
            let send_deadline = deadline.max(Instant::now() + SEND_PATIENCE);
            // A block can land while the message is on its way (the broker blocks a
            // connection when it publishes): then it waits in lapin until the unblock, and
            // the caller is told now rather than at its deadline.
            let sent = tokio::select! {
                sent = timeout_at(send_deadline, publish_on(channel, &message)) => sent,
                blocked = state.wait_for(|s| matches!(s, LinkState::Blocked { .. })) => {
                    return Err(if blocked.is_ok() {
                        PublishError::Blocked
                    } else {
                        PublishError::Closed
                    });
                }
            };
            match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(PublishOnError::Nacked)) => return Err(PublishError::Nacked),
                Ok(Err(PublishOnError::Lapin(error))) => {
                    debug!(%error, "publish failed; waiting for the next session");
                    last_error = Some(PublishError::Failed(error.to_string()));
                    failed_on = Some(current.generation);
                }
                Err(_) => {
                    return Err(PublishError::Failed(format!(
                        "not {} within {:?}",
                        if message.confirm {
                            "confirmed"
                        } else {
                            "written"
                        },
                        patience.max(SEND_PATIENCE)
                    )))
                }
            }
        }
    }
}

impl LinkHandle {
    /// Declares `queue` as `spec` says, bound to the exchange with `bindings`, on the
    /// current session (waiting up to `patience` for one). The conductor declares each
    /// splitter's pool queue so, for the agent's login may declare nothing. A refusal
    /// closes the session's control channel, and the session is replaced.
    pub async fn declare_queue(
        &self,
        topology: &Topology,
        queue: &str,
        spec: &QueueSpec,
        bindings: &[String],
        patience: Duration,
    ) -> Result<(), PublishError> {
        let current = self.session(patience).await?;
        let declared = topology.declare_queue(&current.control, queue, spec, bindings);
        match timeout(patience.max(SEND_PATIENCE), declared).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(PublishError::Failed(error.to_string())),
            Err(_) => Err(PublishError::Failed(format!(
                "queue {queue} not declared within {:?}",
                patience.max(SEND_PATIENCE)
            ))),
        }
    }
}

/// A binding to add or remove ([`LinkHandle::bind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Bind,
    Unbind,
}

impl LinkHandle {
    /// The current session's number (1 for the first, one more for each reconnection),
    /// or `None` while the link is down: what was declared or bound on one session must
    /// be again on the next, whose queues may be new.
    pub fn session_id(&self) -> Option<u64> {
        self.channels.borrow().as_ref().map(|c| c.generation)
    }

    /// Binds `queue` to the exchange with `key`, or removes that binding, on session
    /// `session` only: `Ok(false)` when the link is on another one (or down), where the
    /// binding means nothing. Both are idempotent at the broker.
    pub async fn bind(
        &self,
        topology: &Topology,
        session: u64,
        queue: &str,
        key: &str,
        what: Binding,
    ) -> Result<bool, PublishError> {
        let current = self.channels.borrow().clone();
        let Some(current) = current.filter(|c| c.generation == session) else {
            return Ok(false);
        };
        let (queue, exchange) = (ShortString::from(queue), topology.exchange.as_str());
        let done = async {
            let control = &current.control;
            match what {
                Binding::Bind => {
                    let options = QueueBindOptions::default();
                    control
                        .queue_bind(
                            queue,
                            exchange.into(),
                            key.into(),
                            options,
                            FieldTable::default(),
                        )
                        .await
                }
                Binding::Unbind => {
                    control
                        .queue_unbind(queue, exchange.into(), key.into(), FieldTable::default())
                        .await
                }
            }
        };
        match timeout(SEND_PATIENCE, done).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => Err(PublishError::Failed(error.to_string())),
            Err(_) => Err(PublishError::Failed(format!(
                "{what:?} of {key} not done within {SEND_PATIENCE:?}"
            ))),
        }
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
    /// Declares nothing ([`Link::passive`]).
    passive: bool,
}

/// A session that could not be opened.
struct SessionError {
    message: String,
    /// No broker of the URL listens: try again soon, it costs nothing.
    nobody_listening: bool,
    /// The broker refused a declaration (`message` says which and what to do): only
    /// someone changing the broker or the configuration mends it.
    refused: bool,
    /// A passive link found its queue or the exchange missing (404): the conductor
    /// declares them, and after a broker restart does so again within a tick, so the
    /// agent asks again soon rather than backing off.
    not_declared: bool,
}

/// How soon a passive link asks again for a queue or exchange not declared yet, and how
/// many times in a row before it backs off as for any other failure (a queue that never
/// comes must not cost the broker a connection every half second for ever).
const NOT_DECLARED_RETRY: Duration = Duration::from_millis(400);
const NOT_DECLARED_QUICK_TRIES: u32 = 8;

/// The broker's text when `error` is its refusal of a declaration (406
/// `PRECONDITION_FAILED`, which closes the channel).
/// Whether `error` is the broker's 404: a queue or exchange that does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

pub fn refusal(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
            Some(amqp.get_message().to_string())
        }
        _ => None,
    }
}

impl Link {
    pub fn new(config: LinkConfig, topology: Topology, subscriptions: Vec<Subscription>) -> Self {
        Link {
            config,
            topology,
            subscriptions,
            queues: Vec::new(),
            passive: false,
        }
    }

    /// Declares nothing: publishes to the exchange and consumes its subscriptions' queues
    /// as they are, which someone else declared and bound (the conductor declares a
    /// splitter's pool queue). An agent's link: its broker login has no configure
    /// permission (doc/security.md). Until they exist, the session fails (404) and is
    /// tried again as an unreachable broker is.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
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

    /// Opens sessions one after the other, for ever: a broken one is replaced at once,
    /// starting at the next host; failed attempts wait as [`LinkConfig::reconnect_delay`]
    /// says, jittered.
    async fn supervise(
        self,
        channels_tx: watch::Sender<Option<Channels>>,
        state_tx: watch::Sender<LinkState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut host = 0;
        let mut failures = 0u32;
        let mut quick = 0u32;
        let mut generation = 0u64;
        while !*shutdown.borrow() {
            let opened = tokio::select! {
                opened = self.open_session(host) => opened,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let mut session = match opened {
                Ok(session) => session,
                Err(error) if error.refused => {
                    let delay = jittered(self.config.interval_max, random_u64());
                    error!(reason = %error.message, retry_in = ?delay, "the broker refused a declaration");
                    let _ = state_tx.send(LinkState::Refused(error.message));
                    host += 1;
                    tokio::select! {
                        _ = sleep(delay) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
                Err(error) if error.not_declared && quick < NOT_DECLARED_QUICK_TRIES => {
                    quick += 1;
                    let delay = jittered(NOT_DECLARED_RETRY, random_u64());
                    debug!(error = %error.message, retry_in = ?delay, "not declared yet");
                    tokio::select! {
                        _ = sleep(delay) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
                Err(error) => {
                    let longest = self
                        .config
                        .reconnect_delay(failures, error.nobody_listening);
                    let delay = jittered(longest, random_u64());
                    warn!(error = %error.message, retry_in = ?delay, "broker unreachable");
                    failures = failures.saturating_add(1);
                    host += 1;
                    tokio::select! {
                        _ = sleep(delay) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
            };
            failures = 0;
            quick = 0;
            host = session.index;
            generation += 1;
            let broker = self.config.url.hosts[session.index].to_string();
            info!(broker = %broker, "connected to the broker");
            let _ = channels_tx.send(Some(Channels {
                generation,
                control: session.control.clone(),
                confirmed: session.confirmed.clone(),
                telemetry: session.telemetry.clone(),
            }));
            let stopping = session.watch(&broker, &state_tx, &mut shutdown).await;
            let _ = channels_tx.send(None);
            let _ = state_tx.send(LinkState::Connecting);
            session.consumers.abort_all();
            let (code, text) = if stopping {
                (200, "shutting down")
            } else {
                (320, "reconnecting")
            };
            let _ = timeout(CLOSE_PATIENCE, session.connection.close(code, text.into())).await;
            if stopping {
                break;
            }
            host += 1;
        }
        let _ = channels_tx.send(None);
        let _ = state_tx.send(LinkState::Closed);
        debug!("link closed");
    }

    async fn open_session(&self, host: usize) -> Result<Session, SessionError> {
        let (connection, index) =
            connect(&self.config, host)
                .await
                .map_err(|error| SessionError {
                    message: error.to_string(),
                    nobody_listening: error.nobody_listening,
                    refused: false,
                    not_declared: false,
                })?;
        match self.set_up(&connection).await {
            Ok((control, confirmed, telemetry, consumers)) => Ok(Session {
                connection,
                control,
                confirmed,
                telemetry,
                consumers,
                index,
            }),
            Err(error) => {
                let _ = timeout(CLOSE_PATIENCE, connection.close(200, "setup failed".into())).await;
                let broker = &self.config.url.hosts[index];
                let refused = refusal(&error);
                Err(SessionError {
                    message: match &refused {
                        Some(text) => format!(
                            "{broker}: {}",
                            topology::explain_refusal(text, self.topology.durability)
                        ),
                        None => format!("setting up on {broker}: {error}"),
                    },
                    nobody_listening: false,
                    refused: refused.is_some(),
                    not_declared: self.passive && is_not_found(&error),
                })
            }
        }
    }

    /// Declares the topology and opens the publishing channels and the consumers.
    async fn set_up(
        &self,
        connection: &Connection,
    ) -> lapin::Result<(Channel, Channel, Channel, JoinSet<lapin::Result<()>>)> {
        let control = connection.create_channel().await?;
        // Passive: not even a passive declare of the exchange, which RabbitMQ allows only
        // with more than the write permission; a publish to a missing exchange fails
        // (404) and the session is replaced.
        if !self.passive {
            self.topology.declare_exchange(&control).await?;
        }
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
            if !self.passive {
                self.topology
                    .declare_queue(&channel, &sub.queue, &sub.spec, &sub.bindings)
                    .await?;
            }
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
            consumers.spawn(forward(consumer, sub.sender.clone()));
        }
        Ok((control, confirmed, telemetry, consumers))
    }
}

/// One connection with everything set up on it.
struct Session {
    connection: Connection,
    /// Declarations after the set-up ([`LinkHandle::declare_queue`]).
    control: Channel,
    confirmed: Channel,
    telemetry: Channel,
    consumers: JoinSet<lapin::Result<()>>,
    /// The host of the URL it is connected to.
    index: usize,
}

impl Session {
    /// Reports the session's state until it breaks (returns false) or `shutdown` turns
    /// true (returns true).
    async fn watch(
        &mut self,
        broker: &str,
        state: &watch::Sender<LinkState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut events = self.connection.events_listener();
        let mut poll = tokio::time::interval(STATUS_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut blocked = None;
        loop {
            // The block flag is lapin's (set by its I/O thread before the event arrives),
            // read on every wake-up so that events and polls agree.
            let now_blocked = self.connection.status().blocked();
            if blocked != Some(now_blocked) {
                blocked = Some(now_blocked);
                let _ = state.send(if now_blocked {
                    LinkState::Blocked {
                        broker: broker.to_owned(),
                    }
                } else {
                    LinkState::Up {
                        broker: broker.to_owned(),
                        since: Utc::now(),
                    }
                });
            }
            tokio::select! {
                ended = self.consumers.join_next(), if !self.consumers.is_empty() => match ended {
                    // A receiver went away (its owner is shutting down): nothing to redo.
                    Some(Ok(Ok(()))) | None => {}
                    Some(Ok(Err(error))) => {
                        warn!(%error, broker, "consumer lost; reconnecting");
                        return false;
                    }
                    Some(Err(error)) => {
                        warn!(%error, broker, "consumer task failed; reconnecting");
                        return false;
                    }
                },
                event = events.next() => match event {
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        warn!(broker, %reason, "the broker blocks publishing (resource alarm)");
                    }
                    Some(lapin::Event::ConnectionUnblocked) => {
                        info!(broker, "the broker unblocked publishing");
                    }
                    Some(lapin::Event::Error(error)) => {
                        warn!(%error, broker, "broker connection lost; reconnecting");
                        return false;
                    }
                    Some(_) => {}
                    None => {
                        warn!(broker, "broker connection ended; reconnecting");
                        return false;
                    }
                },
                _ = poll.tick() => {
                    if let Some(what) = self.broken() {
                        warn!(broker, what, "broker session broken; reconnecting");
                        return false;
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => return true,
            }
        }
    }

    /// What broke, when the connection or a publishing channel is no longer open (the
    /// broker closed it; a channel closes on a channel error such as a deleted exchange).
    fn broken(&self) -> Option<&'static str> {
        if !self.connection.status().connected() {
            Some("connection closed")
        } else if !self.confirmed.status().connected()
            || !self.telemetry.status().connected()
            || !self.control.status().connected()
        {
            Some("publishing channel closed")
        } else {
            None
        }
    }
}

/// Forwards deliveries until the receiver goes away (`Ok`) or the consumer fails or ends
/// (`Err`: the session no longer consumes).
async fn forward(
    mut consumer: lapin::Consumer,
    sender: mpsc::Sender<Delivery>,
) -> lapin::Result<()> {
    while let Some(delivery) = consumer.next().await {
        if sender.send(delivery?).await.is_err() {
            return Ok(());
        }
    }
    // The stream ends when the consumer is cancelled, by us or by the broker (queue
    // deleted): either way this session no longer consumes.
    Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer ended").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LinkConfig {
        LinkConfig::new(
            "rabbit://guest:guest@127.0.0.1:5672/".parse().unwrap(),
            "test",
        )
    }

    #[test]
    fn a_broker_that_answers_gets_oslos_backoff() {
        let c = config();
        let waits: Vec<u64> = (0..18)
            .map(|a| c.reconnect_delay(a, false).as_secs())
            .collect();
        assert_eq!(&waits[..4], [1, 3, 5, 7]);
        assert_eq!(waits[17], 30);
    }

    #[test]
    fn nobody_listening_is_tried_again_within_a_second_whatever_the_count() {
        let c = config();
        for attempt in [0, 1, 10, 1000] {
            assert_eq!(c.reconnect_delay(attempt, true), LISTEN_RETRY);
        }
        // A shorter configured interval is kept.
        let quick = LinkConfig {
            retry_interval: Duration::from_millis(200),
            ..config()
        };
        assert_eq!(quick.reconnect_delay(5, true), Duration::from_millis(200));
    }

    #[test]
    fn an_agent_waits_a_few_seconds_at_most() {
        let c = LinkConfig::for_agent(config().url, "agent");
        let waits: Vec<u64> = (0..6)
            .map(|a| c.reconnect_delay(a, false).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn jitter_keeps_between_half_and_all_of_the_wait() {
        let wait = Duration::from_secs(2);
        assert_eq!(jittered(wait, 0), Duration::from_secs(1));
        assert_eq!(jittered(wait, u64::MAX), wait);
        for _ in 0..1000 {
            let d = jittered(wait, random_u64());
            assert!(d >= Duration::from_secs(1) && d <= wait, "{d:?}");
        }
        // Spread: not all the same.
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| random_u64()).collect();
        assert!(draws.len() > 15);
    }

    #[test]
    fn only_up_counts_as_up() {
        let since = Utc::now();
        let up = LinkState::Up {
            broker: "b".into(),
            since,
        };
        assert_eq!(up.up_since(), Some(since));
        assert_eq!(up.broker(), Some("b"));
        let blocked = LinkState::Blocked { broker: "b".into() };
        assert_eq!(blocked.up_since(), None);
        assert_eq!(blocked.broker(), Some("b"));
        assert_eq!(LinkState::Connecting.up_since(), None);
    }
}
