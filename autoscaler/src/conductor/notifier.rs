//! Publishes operator notifications the way oslo.messaging's notifier does, with its
//! `[oslo_messaging_notifications]` drivers and topics.

use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::conf::{Config, NotificationDriver};
use crate::messaging::{
    link::{LinkHandle, Outgoing},
    Durability, NotificationMessage, Priority, QueueSpec, Topology,
};
use autoscaler_core::notification::Notification;

/// How long a notification may wait for the broker before it is given up (and logged).
const PUBLISH_PATIENCE: Duration = Duration::from_secs(5);

/// The priorities the conductor emits; their queues are declared up front as
/// oslo.messaging's notifier does, so notifications wait for a consumer that starts later.
pub const EMITTED_PRIORITIES: [Priority; 3] = [Priority::Info, Priority::Warn, Priority::Error];

#[derive(Debug, Clone)]
pub struct Notifier {
    pub publisher_id: String,
    pub exchange: String,
    /// How the notification queues are declared: as the exchange.
    pub durability: Durability,
    pub drivers: Vec<NotificationDriver>,
    pub topics: Vec<String>,
}

impl Notifier {
    /// OpenStack's `<service>.<host>`, with the service named as the event types begin
    /// (Nova: `compute.<host>` for `compute.instance.*`; Glance: `image.<host>`):
    /// `autoscaler.<host>`.
    pub fn publisher_id(host: &str) -> String {
        format!("autoscaler.{host}")
    }

    /// The notifier `[oslo_messaging_notifications]` describes, for this conductor.
    pub fn from_config(config: &Config) -> Notifier {
        let topology = config.topology();
        Notifier {
            publisher_id: Notifier::publisher_id(&config.default.host),
            exchange: topology.exchange,
            durability: topology.durability,
            drivers: config.oslo_messaging_notifications.driver.clone(),
            topics: config.oslo_messaging_notifications.topics.clone(),
        }
    }

    /// The queues to declare: `<topic>.<priority>` for each topic and emitted priority,
    /// when a broker driver is on.
    pub fn queues(&self) -> Vec<(String, QueueSpec, Vec<String>)> {
        if !self.drivers.iter().any(|d| {
            matches!(
                d,
                NotificationDriver::MessagingV2 | NotificationDriver::Messaging
            )
        }) {
            return Vec::new();
        }
        self.topics
            .iter()
            .flat_map(|topic| {
                EMITTED_PRIORITIES.iter().map(move |p| {
                    let key = Topology::notification_key(topic, p.as_str());
                    (key.clone(), QueueSpec::lasting(self.durability), vec![key])
                })
            })
            .collect()
    }

    /// Sends `event` through every driver. Failures are logged, never returned: a
    /// notification is a report about work already done, not part of it.
    pub async fn notify(&self, link: &LinkHandle, event: Notification) {
        let payload = event.payload();
        if matches!(event.priority(), Priority::Error | Priority::Warn) {
            warn!(template = %event.template(), event_type = event.event_type(), %payload, "attention");
        }
        let notification = NotificationMessage::new(
            self.publisher_id.as_str(),
            event.event_type(),
            event.priority(),
            payload,
            Utc::now(),
        );
        for driver in &self.drivers {
            let body = match driver {
                NotificationDriver::MessagingV2 => notification.to_v2_bytes(),
                NotificationDriver::Messaging => notification.to_v1_bytes(),
                NotificationDriver::Log => {
                    info!(
                        event_type = %notification.event_type,
                        priority = notification.priority.as_str(),
                        payload = %notification.payload,
                        "notification"
                    );
                    continue;
                }
                NotificationDriver::Noop => continue,
            };
            for topic in &self.topics {
                let key = Topology::notification_key(topic, notification.priority.as_str());
                let message = Outgoing {
                    exchange: &self.exchange,
                    routing_key: &key,
                    body: &body,
                    confirm: true,
                    ttl: None,
                    correlation_id: None,
                    headers: None,
                };
                if let Err(error) = link.publish(message, PUBLISH_PATIENCE).await {
                    warn!(%error, event_type = %notification.event_type, routing_key = %key, "notification not sent");
                }
            }
        }
    }
}
