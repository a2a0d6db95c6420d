//! One delivery from the broker, taken in: a telemetry message (heartbeat, metrics, pool
//! acknowledgement) handed to the conductor's state, or an operator's request decoded,
//! answered on its reply address and acknowledged. What cannot be read is counted and
//! dropped.

use std::time::Duration;

use chrono::Utc;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
    types::AMQPValue,
    BasicProperties,
};
use tracing::{debug, info, warn};

use super::{
    api::Request,
    drop_log::DropLog,
    handler::Conductor,
    signed,
    steer::{Outlets, Steering},
};
use crate::messaging::{
    link::PublishError,
    rpc::{is_direct_reply_to, RemoteError, ReplyTo, RpcReply},
    signing::MessageSecrets,
    DropCounts, DropReason, Envelope, Heartbeat, LinkHandle, LinkState, Metrics, PoolAck, Role,
    Topology,
};

/// How long a reply may wait for the broker.
const REPLY_PATIENCE: Duration = Duration::from_secs(5);
/// The header of a request one conductor forwarded to another: the forwarder's host.
pub const FORWARDED_BY: &str = "x-autoscaler-forwarded-by";
/// The header of a forwarded request: the `user_id` it was sent with.
pub const REQUESTED_BY: &str = "x-autoscaler-requested-by";

/// What taking a delivery in needs besides the conductor's state.
pub(super) struct Reception<'a> {
    pub out: Outlets<'a>,
    pub drops: &'a DropCounts,
    /// The conductor's envelope sender name.
    pub sender: &'a str,
    /// Its `[DEFAULT] host` and `control_exchange`, and its broker login's user name
    /// (forwarding requests).
    pub host: &'a str,
    pub exchange: &'a str,
    pub user: Option<&'a str>,
    /// `[DEFAULT] max_message_size`.
    pub max_size: usize,
    /// `[agent] max_clock_skew`.
    pub max_clock_skew: Duration,
    pub drop_log: &'a DropLog,
    /// Broker users whose requests are carried out ([`crate::conf::Config::rpc_allowed_users`]).
    pub rpc_allowed_users: &'a [String],
    /// The agents' message secrets: every telemetry message must carry its VM's MAC.
    pub secrets: &'a MessageSecrets,
}

/// Takes in one heartbeat, metrics message or pool acknowledgement, and acknowledges it.
/// The group that should be listed and stepped now rather than at the next tick: its
/// metrics complete the evidence for a scaling action, or a web VM's server answers and
/// it can join the pool.
pub(super) async fn take_telemetry(
    delivery: Delivery,
    conductor: &mut Conductor,
    steering: &mut Steering,
    rx: &Reception<'_>,
) -> Option<String> {
    let mut act = None;
    let admitted = admit_signed(&delivery, conductor, rx);
    match admitted {
        Ok(Telemetry::Heartbeat(heartbeat)) => {
            let joins = heartbeat.role == Role::Web
                && heartbeat.serving == Some(true)
                && conductor.joins_now(&heartbeat.group, &heartbeat.vm_id);
            act = joins.then(|| heartbeat.group.clone());
            if let Some(group) = conductor.heard(heartbeat, Utc::now()) {
                steering.list(&group);
            }
        }
        Ok(Telemetry::Metrics(metrics)) => {
            // For measuring the reaction (doc/policy.md): how long after its interval
            // ended the splitter's measurement is here.
            let now = Utc::now();
            let interval = chrono::TimeDelta::try_milliseconds((metrics.interval * 1000.0) as i64);
            if let Some(end) = interval.and_then(|i| metrics.start.checked_add_signed(i)) {
                debug!(template = %metrics.group, %end, interval = metrics.interval,
                    requests = metrics.site.requests, mean = metrics.site.mean,
                    lag_ms = (now - end).num_milliseconds(), "metrics taken");
            }
            let group = metrics.group.clone();
            act = conductor.metrics(metrics, now).then_some(group);
        }
        Ok(Telemetry::PoolAck(ack)) => {
            conductor.received_telemetry += 1;
            steering.pool_ack(ack, conductor, &rx.out).await;
        }
        Err(reason) => {
            rx.drops.record(&reason);
            rx.drop_log
                .dropped("dropped a message", delivery.routing_key.as_str(), &reason);
        }
    }
    // Not awaited: a connection the broker blocks (resource alarm) writes nothing until it
    // is unblocked, and the loop must go on meanwhile (ticks, shutdown). At most the
    // prefetch window (TELEMETRY_PREFETCH) of them wait.
    let acker = delivery.acker;
    tokio::spawn(async move {
        if let Err(error) = acker.ack(BasicAckOptions::default()).await {
            debug!(%error, "telemetry ack failed (the channel was replaced)");
        }
    });
    act
}

/// `delivery` read and admitted: its MAC first (before the body is read), then the
/// envelope, the signer held to the payload's VM, the admission rules, and last the
/// sequence number (taken only from a VM the cloud lists, so the table stays bounded).
fn admit_signed(
    delivery: &Delivery,
    conductor: &mut Conductor,
    rx: &Reception<'_>,
) -> Result<Telemetry, DropReason> {
    // The length first: a MAC over a body of the broker's largest size is work wasted.
    if delivery.data.len() > rx.max_size {
        return Err(DropReason::Oversized {
            size: delivery.data.len(),
            limit: rx.max_size,
        });
    }
    let signer = signed::verify(delivery, rx.secrets)?;
    let (sent, seq, telemetry) = decode_signed(&delivery.data, rx.max_size)?;
    signed::held_to_signer(telemetry.vm_id(), &signer)?;
    conductor.admit(&telemetry, sent, Utc::now(), rx.max_clock_skew)?;
    conductor
        .sequences
        .take(telemetry.group(), &signer, telemetry.kind(), seq)?;
    Ok(telemetry)
}

/// What the telemetry queue carries.
#[derive(Debug)]
pub enum Telemetry {
    Heartbeat(Heartbeat),
    Metrics(Metrics),
    PoolAck(PoolAck),
}

impl Telemetry {
    /// The VM the message speaks for.
    pub fn vm_id(&self) -> &str {
        match self {
            Telemetry::Heartbeat(h) => &h.vm_id,
            Telemetry::Metrics(m) => &m.vm_id,
            Telemetry::PoolAck(a) => &a.vm_id,
        }
    }

    /// The group it claims.
    pub fn group(&self) -> &str {
        match self {
            Telemetry::Heartbeat(h) => &h.group,
            Telemetry::Metrics(m) => &m.group,
            Telemetry::PoolAck(a) => &a.group,
        }
    }

    /// Its envelope kind.
    pub fn kind(&self) -> &'static str {
        use crate::messaging::Payload as _;
        match self {
            Telemetry::Heartbeat(_) => Heartbeat::KIND,
            Telemetry::Metrics(_) => Metrics::KIND,
            Telemetry::PoolAck(_) => PoolAck::KIND,
        }
    }
}

/// Reads one telemetry message as the conductor's intake does (public for the
/// simulator's intake benchmark).
pub fn decode_telemetry(data: &[u8], max_size: usize) -> Result<Telemetry, DropReason> {
    decode_sent(data, max_size).map(|(_, telemetry)| telemetry)
}

/// A telemetry message and the time its agent wrote it.
pub fn decode_sent(
    data: &[u8],
    max_size: usize,
) -> Result<(chrono::DateTime<Utc>, Telemetry), DropReason> {
    decode_signed(data, max_size).map(|(sent, _, telemetry)| (sent, telemetry))
}

/// A telemetry message, the time its agent wrote it and its sequence number.
pub fn decode_signed(
    data: &[u8],
    max_size: usize,
) -> Result<(chrono::DateTime<Utc>, Option<u64>, Telemetry), DropReason> {
    let raw = Envelope::decode(data, max_size)?;
    let (sent, seq) = (raw.time, raw.seq);
    let telemetry = if let Some(heartbeat) = raw.payload_as::<Heartbeat>() {
        heartbeat.map(|e| Telemetry::Heartbeat(e.payload))
    } else if let Some(metrics) = raw.payload_as::<Metrics>() {
        metrics.map(|e| Telemetry::Metrics(e.payload))
    } else if let Some(ack) = raw.payload_as::<PoolAck>() {
        ack.map(|e| Telemetry::PoolAck(e.payload))
    } else {
        Err(raw.unknown())
    };
    telemetry.map(|t| (sent, seq, t))
}

/// How old a request without an AMQP expiration may be (oslo's `rpc_response_timeout`
/// default): the CLI always sets one, its timeout.
const MAX_REQUEST_AGE_MS: i64 = 60_000;

/// Refused when the request is older than its AMQP expiration (the CLI's timeout), or
/// than [`MAX_REQUEST_AGE_MS`] without one, counting from the later of the time its
/// envelope and its AMQP `timestamp` give. Relies on the hosts' clocks agreeing, as
/// OpenStack does (NTP).
fn stale(
    delivery: &Delivery,
    sent: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
) -> Result<(), DropReason> {
    let limit_ms = match delivery.properties.expiration() {
        Some(ttl) => ttl.as_str().parse().unwrap_or(0),
        None => MAX_REQUEST_AGE_MS,
    };
    let stamped = delivery
        .properties
        .timestamp()
        .and_then(|t| i64::try_from(t).ok())
        .and_then(|t| chrono::DateTime::<Utc>::from_timestamp(t, 0));
    // The AMQP timestamp has whole seconds: it may make a request up to a second older.
    let age_ms = (now - sent).num_milliseconds();
    let stamped_age_ms = stamped.map_or(0, |t| (now - t).num_milliseconds() - 1000);
    let age_ms = age_ms.max(stamped_age_ms);
    match age_ms > limit_ms {
        true => Err(DropReason::RpcStale { age_ms, limit_ms }),
        false => Ok(()),
    }
}

/// What the broker vouches for, checked before the body is read (issue 17): the login
/// that published the request (`user_id`, which RabbitMQ checks against the connection's
/// user) must be allowed, and answers go only to the direct reply-to pseudo-queue. A
/// request another conductor forwarded carries that conductor's login (`own`, as the
/// broker checked) and the operator's in a header, which is checked in its place.
fn screen(delivery: &Delivery, allowed: &[String], own: Option<&str>) -> Result<(), DropReason> {
    let mut user = (delivery.properties.user_id().as_ref()).map(|u| u.to_string());
    if forwarded_by(delivery).is_some() && user.is_some() && user.as_deref() == own {
        user = requested_by(delivery);
    }
    if !user.as_ref().is_some_and(|u| allowed.contains(u)) {
        return Err(DropReason::RpcNotAllowed(user));
    }
    match delivery.properties.reply_to() {
        Some(to) if !is_direct_reply_to(to.as_str()) => {
            Err(DropReason::RpcBadReplyTo(to.to_string()))
        }
        _ => Ok(()),
    }
}

fn broker_of(link: &LinkHandle) -> String {
    match link.state() {
        LinkState::Up { broker, .. } => broker,
        LinkState::Blocked { broker } => format!("{broker} (publishing blocked: resource alarm)"),
        LinkState::Connecting => "(reconnecting)".to_owned(),
        LinkState::Refused(_) => "(refused)".to_owned(),
        LinkState::Closed => "(closed)".to_owned(),
    }
}

/// Decodes, answers and acknowledges one request. A request that cannot be read is
/// counted, answered with an `invalid` error when it names a reply address, and rejected
/// without requeueing (it would fail the same way again); so is one older than its
/// time-to-live.
pub(super) async fn handle_request(
    delivery: Delivery,
    conductor: &mut Conductor,
    rx: &Reception<'_>,
) {
    if let Err(reason) = screen(&delivery, rx.rpc_allowed_users, rx.user) {
        // Unanswered: an answer would tell the sender something, or land in a queue
        // that is not the caller's.
        rx.drops.record(&reason);
        rx.drop_log
            .dropped("dropped a request", delivery.routing_key.as_str(), &reason);
        refuse(delivery, None, "", String::new(), rx).await;
        return;
    }
    let reply_to = ReplyTo::of(&delivery);
    let decoded = Envelope::decode(&delivery.data, rx.max_size).and_then(|raw| {
        match raw.payload_as::<Request>() {
            Some(request) => request,
            None => Err(raw.unknown()),
        }
    });
    let request = match decoded {
        Ok(request) => request,
        Err(reason) => {
            rx.drops.record(&reason);
            rx.drop_log
                .dropped("dropped a request", delivery.routing_key.as_str(), &reason);
            let message = format!("the conductor could not read the request: {reason}");
            refuse(delivery, reply_to.as_ref(), "invalid", message, rx).await;
            return;
        }
    };
    debug!(from = %request.sender, request = ?request.payload, "request");
    if let Err(reason) = stale(&delivery, request.time, Utc::now()) {
        // The CLI has given up and told its operator so; carrying the request out now
        // would do what the operator was told did not happen.
        warn!(%reason, "request older than its time-to-live; not carried out");
        rx.drops.record(&reason);
        let message = format!("the request expired before the conductor took it: {reason}");
        refuse(delivery, reply_to.as_ref(), "expired", message, rx).await;
        return;
    }
    let handled = conductor
        .handle(
            request.payload,
            Utc::now(),
            &broker_of(rx.out.link),
            rx.drops.snapshot(),
        )
        .await;
    if let Some(owner) = &handled.forward_to {
        if reply_to.is_some() && forwarded_by(&delivery).is_none() {
            match forward(&delivery, owner, rx).await {
                Ok(()) => {
                    debug!(%owner, "request forwarded to the conductor that owns its group");
                    return acknowledge(delivery).await;
                }
                Err(error) => {
                    warn!(%owner, %error, "could not forward a request; answered not_owner")
                }
            }
        }
    }
    if let RpcReply::Error(e) = &handled.reply {
        info!(kind = %e.kind, message = %e.message, "request refused");
    }
    if let Some(reply_to) = reply_to {
        if let Err(error) = reply_to
            .send(rx.out.link, rx.sender, handled.reply, REPLY_PATIENCE)
            .await
        {
            warn!(%error, "could not send a reply");
        }
    }
    for event in handled.events {
        rx.out.notifier.notify(rx.out.link, event).await;
    }
    acknowledge(delivery).await;
}

/// The operator's login a forwarded request was first sent with ([`REQUESTED_BY`]).
fn requested_by(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(REQUESTED_BY)? {
        AMQPValue::LongString(user) => Some(user.to_string()),
        _ => None,
    }
}

/// The host of the conductor that forwarded `delivery`, if one did.
fn forwarded_by(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(FORWARDED_BY)? {
        AMQPValue::LongString(host) => Some(host.to_string()),
        _ => Some(String::new()),
    }
}

/// Publishes the request `delivery` on to the queue of the conductor `owner`, with its
/// reply address, correlation id and expiry, marked as forwarded (it is never forwarded
/// again: if `owner` no longer steers the group it answers `not_owner`, and the CLI asks
/// again). The broker checks `user_id` against the publishing connection: the
/// operator's, which the taker checked, goes along as a header.
async fn forward(delivery: &Delivery, owner: &str, rx: &Reception<'_>) -> Result<(), PublishError> {
    let original = &delivery.properties;
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(FORWARDED_BY.into(), AMQPValue::LongString(rx.host.into()));
    if let Some(user) = original.user_id() {
        headers.insert(
            REQUESTED_BY.into(),
            AMQPValue::LongString(user.as_str().into()),
        );
    }
    let mut properties = BasicProperties::default().with_headers(headers);
    if let Some(v) = original.content_type() {
        properties = properties.with_content_type(v.clone());
    }
    if let Some(v) = original.reply_to() {
        properties = properties.with_reply_to(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        properties = properties.with_correlation_id(v.clone());
    }
    if let Some(v) = original.expiration() {
        properties = properties.with_expiration(v.clone());
    }
    if let (Some(_), Some(user)) = (original.user_id(), rx.user) {
        properties = properties.with_user_id(user.into());
    }
    let key = Topology::conductor_host_rpc_key(owner);
    rx.out
        .link
        .forward(
            rx.exchange,
            &key,
            &delivery.data,
            properties,
            REPLY_PATIENCE,
        )
        .await
}

/// Acknowledges a request that was answered or forwarded.
async fn acknowledge(delivery: Delivery) {
    // Bounded: a connection the broker blocks (resource alarm) writes nothing until it is
    // unblocked; lapin still sends the ack then.
    let ack = delivery.acker.ack(BasicAckOptions::default());
    match tokio::time::timeout(REPLY_PATIENCE, ack).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            debug!(%error, "ack failed (the channel was replaced; the broker redelivers)")
        }
        Err(_) => {
            warn!(patience = ?REPLY_PATIENCE, "request ack not written in time (the broker blocks publishing?)")
        }
    }
}

/// Answers a request that is not carried out with an error of `kind`, when it names a
/// reply address, and rejects it without requeueing.
async fn refuse(
    delivery: Delivery,
    reply_to: Option<&ReplyTo>,
    kind: &str,
    message: String,
    rx: &Reception<'_>,
) {
    if let Some(reply_to) = reply_to {
        let reply = RpcReply::Error(RemoteError {
            kind: kind.into(),
            message,
        });
        if let Err(error) = reply_to
            .send(rx.out.link, rx.sender, reply, REPLY_PATIENCE)
            .await
        {
            warn!(%error, "could not answer a request not carried out");
        }
    }
    if let Err(error) = delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
    {
        debug!(%error, "reject failed (the channel was replaced; the broker requeues)");
    }
}
