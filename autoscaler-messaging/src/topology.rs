//! The AMQP topology: one topic exchange, the routing keys by kind and group, and the
//! queues the conductor and operators' consumers read.
//!
//! | what | routing key | delivery |
//! |---|---|---|
//! | heartbeats | `heartbeat.<group>.<vm>` | transient, per-message TTL |
//! | metrics | `metrics.<group>` | transient, per-message TTL |
//! | group status (the conductor's tick) | `status.<group>` | transient, per-message TTL |
//! | pool updates | `pool.<group>` | persistent, publisher confirms |
//! | pool acks | `pool-ack.<group>` | persistent, publisher confirms |
//! | CLI requests | `rpc.conductor` | persistent, confirms, expire with the CLI's timeout |
//! | notifications | `<topic>.<priority>` (e.g. `notifications.info`) | persistent, confirms |
//!
//! The conductor's queue names start with the exchange name, so two deployments (or two
//! tests) that use different exchanges on one broker never share them. Notification
//! queues are the exception: they are named `<topic>.<priority>` as oslo.messaging names
//! them, which is what notification consumers expect; give each deployment its own
//! `[oslo_messaging_notifications] topics` to keep them apart.
//!
//! # Durability
//!
//! Whoever declares an exchange or a queue must declare it as it exists, or RabbitMQ
//! closes the channel (`PRECONDITION_FAILED - inequivalent arg 'durable'`). oslo.messaging
//! declares the exchange and the `<topic>.<priority>` queues durable only with
//! `[oslo_messaging_rabbit] amqp_durable_queues = true` (default false, `impl_rabbit.py`:
//! `Connection.durable`, `declare_topic_consumer`, `notify_send`), so the exchange, the
//! conductors' request queue and the notification queues are declared with the
//! deployment's [`Durability`] (the same option, the same default), by every process that
//! declares them: a stock oslo.messaging listener then reads them unchanged.
//! [`explain_refusal`] turns the broker's refusal into what to do about it.

use std::time::Duration;

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
    Channel, ExchangeKind,
};

/// Routing key of the conductor's request queue.
pub const RPC_CONDUCTOR: &str = "rpc.conductor";

/// Whether the exchange and the lasting queues survive a broker restart:
/// `[oslo_messaging_rabbit] amqp_durable_queues`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// oslo.messaging's default: gone with a broker restart, declared again by the first
    /// process that reconnects.
    Transient,
    /// Survives a broker restart, with the persistent messages in its queues.
    Durable,
}

impl Durability {
    /// From the option's value.
    pub fn from_amqp_durable_queues(durable: bool) -> Self {
        if durable {
            Durability::Durable
        } else {
            Durability::Transient
        }
    }

    pub fn is_durable(self) -> bool {
        self == Durability::Durable
    }

    /// The option's value: `true` or `false`.
    pub fn as_option(self) -> &'static str {
        if self.is_durable() {
            "true"
        } else {
            "false"
        }
    }
}

/// Names derived from the exchange (`[DEFAULT] control_exchange`), and how the exchange and
/// the lasting queues are declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub durability: Durability,
}

impl Topology {
    pub fn new(exchange: impl Into<String>, durability: Durability) -> Self {
        Topology {
            exchange: exchange.into(),
            durability,
        }
    }

    pub fn heartbeat_key(group: &str, vm_id: &str) -> String {
        format!("heartbeat.{group}.{vm_id}")
    }

    pub fn metrics_key(group: &str) -> String {
        format!("metrics.{group}")
    }

    /// Where the conductor publishes each tick's row of a group (what it decided and why),
    /// for live views such as `autoscaler-manage monitor`.
    pub fn status_key(group: &str) -> String {
        format!("status.{group}")
    }

    pub fn pool_key(group: &str) -> String {
        format!("pool.{group}")
    }

    /// Where the splitter answers pool updates.
    pub fn pool_ack_key(group: &str) -> String {
        format!("pool-ack.{group}")
    }

    /// The splitter agent's own queue of pool updates. `tag` is
    /// [`crate::signing::VmKey::pool_queue_tag`] of the splitter's key: the agents share
    /// one broker login that may read every pool queue, and only the splitter and the
    /// conductors know its queue's name.
    pub fn splitter_queue(&self, vm_id: &str, tag: &str) -> String {
        format!("{}.splitter.{vm_id}.{tag}", self.exchange)
    }

    /// oslo.messaging's notification routing key: `<topic>.<priority in lowercase>`.
    pub fn notification_key(topic: &str, priority: &str) -> String {
        format!("{topic}.{}", priority.to_ascii_lowercase())
    }

    /// The queue every conductor consumes CLI requests from ([`QueueSpec::lasting`]).
    pub fn conductor_rpc_queue(&self) -> String {
        format!("{}.conductor.rpc", self.exchange)
    }

    /// The queue of requests forwarded to one conductor by the others, which took them
    /// from [`Topology::conductor_rpc_queue`] for a group this one owns (one per
    /// conductor host, living while it does).
    pub fn conductor_host_rpc_queue(&self, host: &str) -> String {
        format!("{}.conductor.rpc.{host}", self.exchange)
    }

    /// The routing key of [`Topology::conductor_host_rpc_queue`].
    pub fn conductor_host_rpc_key(host: &str) -> String {
        format!("{RPC_CONDUCTOR}.{host}")
    }

    /// The conductor's own queue of heartbeats and metrics (one per conductor host).
    pub fn conductor_telemetry_queue(&self, host: &str) -> String {
        format!("{}.conductor.telemetry.{host}", self.exchange)
    }

    /// The routing keys a conductor's telemetry queue is bound with for one group it
    /// steers: its heartbeats ([`Topology::group_heartbeats`]), its splitter's metrics
    /// and pool acks.
    pub fn telemetry_bindings(group: &str) -> [String; 3] {
        [
            Topology::group_heartbeats(group),
            Topology::metrics_key(group),
            Topology::pool_ack_key(group),
        ]
    }

    /// The binding that matches the heartbeats of `group`'s VMs and no other group's. A
    /// VM's name is `<group>-<role>-<hex>`: it holds as many dots as its group's name,
    /// and a topic `*` matches one dot-separated word. `heartbeat.<group>.#` would also
    /// match the heartbeats of a group named `<group>.<more>` (`shop` and `shop.eu`).
    pub fn group_heartbeats(group: &str) -> String {
        let words = group.split('.').count();
        let mut key = format!("heartbeat.{group}");
        key.push_str(&".*".repeat(words));
        key
    }

    /// Declares the exchange: a topic exchange, durable as [`Topology::durability`] says,
    /// not auto-deleted (oslo's `amqp_auto_delete` default); idempotent.
    pub async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                ShortString::from(self.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: self.durability.is_durable(),
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }

    /// Declares `queue` as `spec` says and binds it to the exchange with `keys`.
    pub async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        spec: &QueueSpec,
        keys: &[String],
    ) -> lapin::Result<()> {
        let mut args = FieldTable::default();
        if let Some(len) = spec.max_length {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(len as i64));
            // Telemetry is perishable: when the conductor falls behind, the oldest
            // heartbeats are the ones worth least.
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("drop-head".into()),
            );
        }
        if let Some(bytes) = spec.max_length_bytes {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(bytes));
        }
        if let Some(expires) = spec.expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    durable: spec.durable,
                    auto_delete: spec.auto_delete,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        for key in keys {
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(self.exchange.as_str()),
                    ShortString::from(key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// What to do about the broker's refusal of a declaration, from its text (RabbitMQ's
/// `PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'autoscaler' in vhost
/// '/': received 'false' but current is 'true'`), for a process that declares with
/// `durability`. A durability mismatch names the option's two ways out; any other
/// refusal is given as the broker said it.
pub fn explain_refusal(text: &str, durability: Durability) -> String {
    let Some(found) = DurabilityRefusal::parse(text) else {
        return format!("the broker refused a declaration: {text}");
    };
    let DurabilityRefusal { kind, name, vhost } = found;
    let existing = if durability.is_durable() {
        "transient"
    } else {
        "durable"
    };
    let other = Durability::from_amqp_durable_queues(!durability.is_durable());
    let delete = match kind {
        "queue" => format!("rabbitmqctl delete_queue -p '{vhost}' '{name}'"),
        _ => format!("rabbitmqadmin --vhost='{vhost}' delete exchange name='{name}'"),
    };
    format!(
        "the broker refused a declaration: {text}. The {kind} {name:?} exists {existing}, \
         and [oslo_messaging_rabbit] amqp_durable_queues = {} declares it otherwise. \
         Either set amqp_durable_queues = {} to keep it (and configure your oslo.messaging \
         consumers the same), or stop every conductor and run `autoscaler-manage broker \
         redeclare`, which deletes what differs and declares it again (by hand: {delete}); \
         see \"Durability\" in doc/messaging.md",
        durability.as_option(),
        other.as_option(),
    )
}

/// Whether the broker's refusal `text` is about durability (the object exists with the
/// other one).
pub fn is_durability_refusal(text: &str) -> bool {
    DurabilityRefusal::parse(text).is_some()
}

/// The parts of RabbitMQ's durability refusal.
#[derive(Debug, PartialEq, Eq)]
struct DurabilityRefusal<'a> {
    /// `exchange` or `queue`.
    kind: &'a str,
    name: &'a str,
    vhost: &'a str,
}

impl<'a> DurabilityRefusal<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let rest = text.split_once("inequivalent arg 'durable' for ")?.1;
        let (kind, rest) = rest.split_once(" '")?;
        if kind != "exchange" && kind != "queue" {
            return None;
        }
        // Names may hold quotes; the vhost part is what follows the name.
        let (name, rest) = rest.rsplit_once("' in vhost '")?;
        let (vhost, _) = rest.rsplit_once("':")?;
        Some(DurabilityRefusal { kind, name, vhost })
    }
}

/// How a queue is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub durable: bool,
    pub auto_delete: bool,
    /// Bound on ready messages; older ones are dropped beyond it.
    pub max_length: Option<u32>,
    /// Bound on the ready messages' bodies, in bytes (RabbitMQ's `x-max-length-bytes`):
    /// a body larger than this alone never reaches the consumer (issue 17: a VM could
    /// otherwise make it buffer up to the broker's 128 MiB message limit).
    pub max_length_bytes: Option<u64>,
    /// RabbitMQ's `x-expires`: the queue is deleted once it has had no consumer and no
    /// new declaration for this long.
    pub expires: Option<Duration>,
}

impl QueueSpec {
    /// Outlives its consumers, durable as the deployment says: the conductors' requests
    /// and the notifications (oslo.messaging declares its topic queues so, with
    /// `amqp_durable_queues` and `amqp_auto_delete` = false).
    pub fn lasting(durability: Durability) -> QueueSpec {
        QueueSpec {
            durable: durability.is_durable(),
            auto_delete: false,
            max_length: None,
            max_length_bytes: None,
            expires: None,
        }
    }

    /// Lives while its consumer does, bounded: heartbeats and metrics (a heartbeat is
    /// about 300 bytes, so 1 KiB a message on average, and at least 1 MiB in all).
    pub fn telemetry(max_length: u32) -> QueueSpec {
        QueueSpec {
            durable: false,
            auto_delete: true,
            max_length: Some(max_length),
            max_length_bytes: Some((u64::from(max_length) * 1024).max(1 << 20)),
            expires: None,
        }
    }

    /// A splitter's pool queue ([`Topology::splitter_queue`]): declared and bound by the
    /// conductor (the agent's login may declare nothing; doc/security.md), again at every
    /// listing of its group, so that it outlives the agent's reconnections and comes back
    /// after a broker restart. Only the newest updates matter: a few are kept (the oldest
    /// dropped), up to 1 MiB each (a pool's largest). Deleted by the broker once nobody
    /// consumed or declared it for [`SPLITTER_QUEUE_EXPIRES`] (its VM is gone).
    pub fn splitter_pool() -> QueueSpec {
        QueueSpec {
            durable: false,
            auto_delete: false,
            max_length: Some(SPLITTER_QUEUE_LENGTH),
            max_length_bytes: Some(u64::from(SPLITTER_QUEUE_LENGTH) << 20),
            expires: Some(SPLITTER_QUEUE_EXPIRES),
        }
    }
}

/// Pool updates a splitter's queue keeps while its agent is away.
pub const SPLITTER_QUEUE_LENGTH: u32 = 4;
/// How long a splitter's queue outlives its last consumer and the conductor's last
/// declaration of it.
pub const SPLITTER_QUEUE_EXPIRES: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: the conductor's error says which object, which way it differs and the
    /// two ways out.
    #[test]
    fn issue_15_a_durability_refusal_says_what_to_do() {
        let refused = "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange \
                       'autoscaler' in vhost '/': received 'false' but current is 'true'";
        let text = explain_refusal(refused, Durability::Transient);
        assert_eq!(
            text,
            format!(
                "the broker refused a declaration: {refused}. The exchange \"autoscaler\" \
                 exists durable, and [oslo_messaging_rabbit] amqp_durable_queues = false \
                 declares it otherwise. Either set amqp_durable_queues = true to keep it (and \
                 configure your oslo.messaging consumers the same), or stop every conductor \
                 and run `autoscaler-manage broker redeclare`, which deletes what differs and \
                 declares it again (by hand: rabbitmqadmin --vhost='/' delete exchange \
                 name='autoscaler'); see \"Durability\" in doc/messaging.md"
            )
        );
        let queue = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue \
                     'autoscaler.conductor.rpc' in vhost 'prod': received 'true' but current \
                     is 'false'";
        let text = explain_refusal(queue, Durability::Durable);
        assert!(
            text.contains("The queue \"autoscaler.conductor.rpc\" exists transient, and [oslo_messaging_rabbit] amqp_durable_queues = true"),
            "{text}"
        );
        assert!(
            text.contains("set amqp_durable_queues = false to keep it"),
            "{text}"
        );
        assert!(
            text.contains("rabbitmqctl delete_queue -p 'prod' 'autoscaler.conductor.rpc'"),
            "{text}"
        );
        let other = "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in \
                     vhost '/': received the value '100' of type 'long' but current is none";
        assert_eq!(
            explain_refusal(other, Durability::Transient),
            format!("the broker refused a declaration: {other}")
        );
    }

    #[test]
    fn durability_follows_the_option() {
        let t = Topology::new("x", Durability::from_amqp_durable_queues(false));
        assert_eq!(t.durability, Durability::Transient);
        assert!(!QueueSpec::lasting(t.durability).durable);
        assert!(QueueSpec::lasting(Durability::Durable).durable);
        assert!(!QueueSpec::lasting(Durability::Durable).auto_delete);
        assert_eq!(Durability::Durable.as_option(), "true");
    }

    #[test]
    fn keys_and_queue_names() {
        let t = Topology::new("autoscaler", Durability::Transient);
        assert_eq!(
            Topology::heartbeat_key("shop", "vm-3"),
            "heartbeat.shop.vm-3"
        );
        assert_eq!(Topology::metrics_key("shop"), "metrics.shop");
        assert_eq!(Topology::group_heartbeats("shop"), "heartbeat.shop.*");
        assert_eq!(
            Topology::group_heartbeats("shop.eu"),
            "heartbeat.shop.eu.*.*"
        );
        assert_eq!(Topology::pool_key("shop"), "pool.shop");
        assert_eq!(Topology::status_key("shop"), "status.shop");
        assert_eq!(
            Topology::notification_key("notifications", "INFO"),
            "notifications.info"
        );
        assert_eq!(t.conductor_rpc_queue(), "autoscaler.conductor.rpc");
        assert_eq!(
            t.conductor_telemetry_queue("node1"),
            "autoscaler.conductor.telemetry.node1"
        );
    }
}
