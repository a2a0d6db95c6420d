//! The AMQP topology: one durable topic exchange, the routing keys by kind and group, and
//! the queues the conductor and operators' consumers read.
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
//! `[oslo_messaging_notifications] topics` to keep them apart. The exchange and the
//! notification queues are durable, so an oslo.messaging listener must run with
//! `[oslo_messaging_rabbit] amqp_durable_queues = true` to declare them the same way.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
    Channel, ExchangeKind,
};

/// Routing key of the conductor's request queue.
pub const RPC_CONDUCTOR: &str = "rpc.conductor";

/// Names derived from the exchange (`[DEFAULT] control_exchange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
}

impl Topology {
    pub fn new(exchange: impl Into<String>) -> Self {
        Topology {
            exchange: exchange.into(),
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

    /// The splitter agent's own queue of pool updates.
    pub fn splitter_queue(&self, vm_id: &str) -> String {
        format!("{}.splitter.{vm_id}", self.exchange)
    }

    /// oslo.messaging's notification routing key: `<topic>.<priority in lowercase>`.
    pub fn notification_key(topic: &str, priority: &str) -> String {
        format!("{topic}.{}", priority.to_ascii_lowercase())
    }

    /// The durable queue every conductor consumes CLI requests from.
    pub fn conductor_rpc_queue(&self) -> String {
        format!("{}.conductor.rpc", self.exchange)
    }

    /// The conductor's own queue of heartbeats and metrics (one per conductor host).
    pub fn conductor_telemetry_queue(&self, host: &str) -> String {
        format!("{}.conductor.telemetry.{host}", self.exchange)
    }

    /// Declares the exchange (durable topic; idempotent).
    pub async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                ShortString::from(self.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
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

/// How a queue is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub durable: bool,
    pub auto_delete: bool,
    /// Bound on ready messages; older ones are dropped beyond it.
    pub max_length: Option<u32>,
}

impl QueueSpec {
    /// Survives broker restarts: commands and notifications.
    pub const DURABLE: QueueSpec = QueueSpec {
        durable: true,
        auto_delete: false,
        max_length: None,
    };

    /// Lives while its consumer does, bounded: heartbeats and metrics.
    pub fn telemetry(max_length: u32) -> QueueSpec {
        QueueSpec {
            durable: false,
            auto_delete: true,
            max_length: Some(max_length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_queue_names() {
        let t = Topology::new("autoscaler");
        assert_eq!(
            Topology::heartbeat_key("shop", "vm-3"),
            "heartbeat.shop.vm-3"
        );
        assert_eq!(Topology::metrics_key("shop"), "metrics.shop");
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
