//! Operator notifications in oslo.messaging's format, so existing OpenStack notification
//! consumers (Ceilometer, Searchlight-style listeners, `oslo.messaging` notification
//! listeners) can read them unchanged.
//!
//! The message is `{"message_id", "publisher_id", "event_type", "priority", "payload",
//! "timestamp"}`; the `messagingv2` driver wraps its JSON text in the v2 envelope
//! `{"oslo.version": "2.0", "oslo.message": "<json text>"}`, the `messaging` driver sends it
//! bare. The routing key is `<topic>.<priority>` in lowercase.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use autoscaler_core::notification::Priority;

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationMessage {
    pub message_id: String,
    pub publisher_id: String,
    pub event_type: String,
    pub priority: Priority,
    pub payload: serde_json::Value,
    /// oslo's `str(timeutils.utcnow())`: `2026-11-27 19:00:00.123456`, UTC, no zone.
    pub timestamp: String,
}

const OSLO_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.6f";

impl NotificationMessage {
    pub fn new(
        publisher_id: impl Into<String>,
        event_type: impl Into<String>,
        priority: Priority,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Self {
        NotificationMessage {
            message_id: Uuid::new_v4().to_string(),
            publisher_id: publisher_id.into(),
            event_type: event_type.into(),
            priority,
            payload,
            timestamp: now.format(OSLO_TIMESTAMP).to_string(),
        }
    }

    /// The body the `messagingv2` driver publishes.
    pub fn to_v2_bytes(&self) -> Vec<u8> {
        let inner = serde_json::to_string(self).expect("notifications serialize to JSON");
        serde_json::to_vec(&serde_json::json!({
            "oslo.version": "2.0",
            "oslo.message": inner,
        }))
        .expect("a JSON object serializes")
    }

    /// The body the legacy `messaging` driver publishes.
    pub fn to_v1_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("notifications serialize to JSON")
    }

    /// Reads a notification in either format, as an oslo listener would.
    pub fn from_bytes(bytes: &[u8]) -> Result<NotificationMessage, serde_json::Error> {
        #[derive(Deserialize)]
        struct V2 {
            #[serde(rename = "oslo.version")]
            _version: String,
            #[serde(rename = "oslo.message")]
            message: String,
        }
        match serde_json::from_slice::<V2>(bytes) {
            Ok(v2) => serde_json::from_str(&v2.message),
            Err(_) => serde_json::from_slice(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_envelope_matches_oslo() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T19:00:01.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = NotificationMessage::new(
            "autoscaler.node1",
            "autoscaler.template.instantiate.end",
            Priority::Info,
            serde_json::json!({"template": "shop"}),
            now,
        );
        let outer: serde_json::Value = serde_json::from_slice(&n.to_v2_bytes()).unwrap();
        assert_eq!(outer["oslo.version"], "2.0");
        let inner: serde_json::Value =
            serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["priority"], "INFO");
        assert_eq!(inner["timestamp"], "2026-11-27 19:00:01.500000");
        assert_eq!(inner["event_type"], "autoscaler.template.instantiate.end");
        assert_eq!(inner["payload"]["template"], "shop");
        assert_eq!(inner["message_id"].as_str().unwrap().len(), 36);
        assert_eq!(
            NotificationMessage::from_bytes(&n.to_v2_bytes()).unwrap(),
            n
        );
        assert_eq!(
            NotificationMessage::from_bytes(&n.to_v1_bytes()).unwrap(),
            n
        );
    }
}
