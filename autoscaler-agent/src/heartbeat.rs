//! Heartbeats: one transient message per interval with a short TTL. A heartbeat that
//! cannot be sent is skipped, not queued: the next one says the same, fresher.

use std::time::Duration;

use autoscaler_messaging::{Envelope, Heartbeat, LinkHandle, Outgoing, Role, Topology};
use chrono::Utc;
use tokio::{sync::watch, time::MissedTickBehavior};
use tracing::{debug, warn};

pub struct Settings {
    pub exchange: String,
    pub sender: String,
    pub group: String,
    pub vm_id: String,
    pub role: Role,
    pub interval: Duration,
    pub ttl: Duration,
}

pub async fn run(link: LinkHandle, settings: Settings, mut stop: watch::Receiver<bool>) {
    let key = Topology::heartbeat_key(&settings.group, &settings.vm_id);
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let body = Envelope::new(
            settings.sender.as_str(),
            Utc::now(),
            Heartbeat {
                group: settings.group.clone(),
                vm_id: settings.vm_id.clone(),
                role: settings.role,
                seq,
                serving: None,
                url: None,
            },
        )
        .to_bytes();
        let message = Outgoing {
            exchange: &settings.exchange,
            routing_key: &key,
            body: &body,
            confirm: false,
            ttl: Some(settings.ttl),
            correlation_id: None,
        };
        // Patience of one interval: older than that, the heartbeat is stale anyway.
        match link.publish(message, settings.interval).await {
            Ok(()) => debug!(seq, "heartbeat"),
            Err(error) => warn!(%error, seq, "heartbeat not sent"),
        }
        seq += 1;
    }
}
