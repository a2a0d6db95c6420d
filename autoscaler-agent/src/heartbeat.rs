//! Heartbeats: one transient message per interval with a short TTL, saying whether the
//! VM's server answers its local check (`serving`). A heartbeat that cannot be sent is
//! skipped, not queued: the next one says the same, fresher.
//!
//! The check runs in a task of its own, once per interval, each for at most the
//! configured `check_timeout`; a heartbeat carries the last answer. So a page slower than
//! an interval still says "serving" (issue 16, item 1) and never delays a heartbeat.

use std::time::Duration;

use std::sync::Arc;

use autoscaler_messaging::{signing::Signer, Heartbeat, LinkHandle, Outgoing, Role, Topology};
use chrono::Utc;
use tokio::{sync::watch, time::MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::web::LocalCheck;

pub struct Settings {
    pub exchange: String,
    pub sender: String,
    pub group: String,
    pub vm_id: String,
    pub role: Role,
    pub interval: Duration,
    pub ttl: Duration,
    /// The longest one check may take; a slower answer is "not serving".
    pub check_timeout: Duration,
    /// The local check behind `serving`; without one, `serving` is absent.
    pub check: Option<LocalCheck>,
    /// The site's URL (splitter), for the operator.
    pub site_url: Option<String>,
    /// The address the VM's server listens on, announced for clouds that report none.
    pub address: Option<std::net::IpAddr>,
    /// Signs every heartbeat with the VM's key.
    pub signer: Arc<Signer>,
}

pub async fn run(link: LinkHandle, settings: Settings, mut stop: watch::Receiver<bool>) {
    let key = Topology::heartbeat_key(&settings.group, &settings.vm_id);
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let checked = settings.check.clone().map(|check| {
        spawn_check(
            check,
            settings.interval,
            settings.check_timeout,
            stop.clone(),
        )
    });
    let mut seq = 0u64;
    let mut last_serving = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let serving = checked.as_ref().map(|answer| *answer.borrow());
        if serving != last_serving {
            // Changes only: once a second would flood the log.
            info!(?serving, url = ?settings.check.as_ref().map(|c| c.url().to_string()), "serving");
            last_serving = serving;
        }
        let heartbeat = Heartbeat {
            group: settings.group.clone(),
            vm_id: settings.vm_id.clone(),
            role: settings.role,
            seq,
            serving,
            url: settings.site_url.clone(),
            address: settings.address.map(|a| a.to_string()),
        };
        let (body, headers) = settings
            .signer
            .seal(&settings.sender, Utc::now(), &heartbeat);
        let message = Outgoing {
            exchange: &settings.exchange,
            routing_key: &key,
            body: &body,
            confirm: false,
            ttl: Some(settings.ttl),
            correlation_id: None,
            headers: Some(&headers),
        };
        // Patience of one interval: older than that, the heartbeat is stale anyway.
        match link.publish(message, settings.interval).await {
            Ok(()) => debug!(seq, ?serving, "heartbeat"),
            Err(error) => warn!(%error, seq, "heartbeat not sent"),
        }
        seq += 1;
    }
}

/// Runs `check` once per `interval` (a check slower than that delays the next), each for
/// at most `timeout`, until `stop`. The receiver holds the last answer: false until the
/// first, so a VM never joins the pool before its server answered.
fn spawn_check(
    check: LocalCheck,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (answer, answers) = watch::channel(false);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let serving = tokio::select! {
                serving = async {
                    ticks.tick().await;
                    check.serving(timeout).await
                } => serving,
                _ = stop.wait_for(|s| *s) => return,
            };
            if answer.send(serving).is_err() {
                return;
            }
        }
    });
    answers
}
