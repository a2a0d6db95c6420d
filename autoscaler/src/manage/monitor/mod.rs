//! `autoscaler-manage monitor [TEMPLATE]`: a live view of the sites, built only from what
//! the conductor and the agents publish on the broker (the conductor's per-tick rows on
//! `status.<group>`, the splitter's `metrics.<group>`, every agent's heartbeats, and the
//! notifications), the way an operator watches the service from any machine that reaches
//! RabbitMQ. It reads none of the conductor's files.
//!
//! The monitor listens on a queue of its own (`<exchange>.monitor.<host>.<pid>`: not
//! durable, deleted with its connection, bounded like telemetry), bound to those routing
//! keys; a topic exchange copies each message to every bound queue, so the monitor takes
//! nothing away from the conductor or from other notification consumers. What it shows is
//! decided in [`view`].
//!
//! Agents' metrics and heartbeats are shown only when they carry their VM's MAC (issue
//! 17), checked with the message key file (`[agent] message_key_file`) when this user can
//! read it; otherwise they are shown unverified, and the monitor says so. The conductor's
//! rows and the notifications come on routing keys the agents' login may not publish on.

pub mod view;

use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::Utc;
use lapin::message::Delivery;
use tokio::sync::{mpsc, watch};

use self::view::{header, Heard, Line, LiveView};
use super::output::Format;
use crate::{
    conductor::timeseries::Row,
    conf::Config,
    messaging::{
        link,
        signing::{MessageSecrets, Signature},
        Envelope, Heartbeat, Link, LinkState, Metrics, NotificationMessage, QueueSpec,
        Subscription, Topology,
    },
};

/// Messages the broker may push before the monitor has printed them (it does not
/// acknowledge): a few seconds of a large site's heartbeats.
const PREFETCH: u16 = 500;
/// Ready messages kept on the broker for a monitor that falls behind; the oldest go first.
const QUEUE_LENGTH: u32 = 10_000;

/// What to watch, and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this template's messages; all templates when `None`.
    pub template: Option<String>,
    /// Stop after this long; run until interrupted when `None`.
    pub duration: Option<Duration>,
    pub format: Format,
    /// How long to wait for the broker before giving up.
    pub connect_timeout: Duration,
}

/// The routing keys the monitor's queue is bound to: one template's exactly, or every
/// template's (`#`: a template's name may hold dots).
pub fn bindings(template: Option<&str>, notification_topics: &[String]) -> Vec<String> {
    let mut keys = match template {
        Some(group) => vec![
            Topology::status_key(group),
            Topology::metrics_key(group),
            Topology::group_heartbeats(group),
        ],
        None => ["status.#", "metrics.#", "heartbeat.#"]
            .map(String::from)
            .to_vec(),
    };
    keys.extend(notification_topics.iter().map(|topic| format!("{topic}.*")));
    keys
}

/// Why a delivery is not shown (each counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unshown {
    Unreadable,
    /// An agent's message without its VM's MAC.
    Unverified,
}

/// Decodes one delivery by its routing key; agents' messages are checked against
/// `secrets` when the monitor has them.
fn decode(
    delivery: &Delivery,
    max_size: usize,
    secrets: Option<&MessageSecrets>,
) -> Result<Heard, Unshown> {
    let key = delivery.routing_key.as_str();
    let ours = ["status.", "metrics.", "heartbeat."]
        .iter()
        .any(|prefix| key.starts_with(prefix));
    if !ours {
        return NotificationMessage::from_bytes(&delivery.data)
            .map(Heard::Notification)
            .map_err(|_| Unshown::Unreadable);
    }
    let envelope = Envelope::decode(&delivery.data, max_size).map_err(|_| Unshown::Unreadable)?;
    if let Some(status) = envelope.payload_as::<Row>() {
        return status
            .map(|e| Heard::Status(e.payload))
            .map_err(|_| Unshown::Unreadable);
    }
    let heard = match envelope.payload_as::<Metrics>() {
        Some(metrics) => metrics.map(|e| Heard::Metrics(e.payload)),
        None => match envelope.payload_as::<Heartbeat>() {
            Some(heartbeat) => heartbeat.map(|e| Heard::Heartbeat(e.payload)),
            None => return Err(Unshown::Unreadable),
        },
    };
    let heard = heard.map_err(|_| Unshown::Unreadable)?;
    match secrets {
        Some(secrets) if !signed_by_its_vm(secrets, delivery, &heard) => Err(Unshown::Unverified),
        _ => Ok(heard),
    }
}

/// Whether an agent's message carries the MAC of the VM it speaks for.
fn signed_by_its_vm(secrets: &MessageSecrets, delivery: &Delivery, heard: &Heard) -> bool {
    let vm = match heard {
        Heard::Metrics(m) => &m.vm_id,
        Heard::Heartbeat(h) => &h.vm_id,
        _ => return true,
    };
    let signature = Signature::of(delivery.properties.headers().as_ref());
    signature.is_some_and(|s| &s.signer == vm && secrets.verify(vm, &delivery.data, &s.mac))
}

/// The message secrets, when this user can read the key file; otherwise the monitor
/// says it shows agents' messages unverified.
fn read_secrets(config: &Config) -> Option<MessageSecrets> {
    let path = config.agent.message_key_path(&config.default.state_path);
    match MessageSecrets::read(&path) {
        Ok(secrets) => Some(secrets),
        Err(error) => {
            eprintln!("NOTE: {error}: agents' metrics and heartbeats are shown unverified");
            None
        }
    }
}

fn emit(line: &Line, format: Format) {
    match format {
        Format::Table => println!("{}", printable(&line.to_text())),
        Format::Json => println!(
            "{}",
            serde_json::to_string(line).expect("monitor lines serialize")
        ),
    }
}

/// `text` with its control characters escaped (`\u{1b}`, `\n`, ...): names and reasons
/// in a line may come from a VM's message, which must not drive the operator's terminal
/// (issue 17). JSON lines are escaped by serde.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect()
}

/// Runs the monitor until the duration ends or the operator interrupts it.
pub fn run(config: &Config, options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(watch_broker(config, options))
}

async fn watch_broker(config: &Config, options: Options) -> anyhow::Result<()> {
    let exchange = config.default.control_exchange.clone();
    let id = format!("{}.{}", config.default.host, std::process::id());
    let (sender, mut deliveries) = mpsc::channel(usize::from(PREFETCH));
    let subscription = Subscription {
        queue: format!("{exchange}.monitor.{id}"),
        spec: QueueSpec::telemetry(QUEUE_LENGTH),
        bindings: bindings(
            options.template.as_deref(),
            &config.oslo_messaging_notifications.topics,
        ),
        prefetch: PREFETCH,
        ack: false,
        sender,
    };
    let link_config = config.link_config(format!("autoscaler-manage.monitor.{id}"));
    // Fail fast, as every CLI command does, when no broker answers at the start; once
    // watching, the link rides out broker restarts and failovers.
    let (probe, _) = tokio::time::timeout(options.connect_timeout, link::connect(&link_config, 0))
        .await
        .map_err(|_| {
            anyhow!(
                "cannot reach the broker at {} within {} s",
                config.default.transport_url,
                options.connect_timeout.as_secs()
            )
        })??;
    let _ = probe.close(200, "probe".into()).await;
    let (stop, stopped) = watch::channel(false);
    let (link, task) = Link::new(
        link_config,
        Topology::new(exchange.clone(), config.oslo_messaging_rabbit.durability()),
        vec![subscription],
    )
    .spawn(stopped);
    // The borrow `wait_for` returns is dropped at once: held, it would block the link's
    // next state change (a deadlock on this one-thread runtime).
    let mut state = link.watch_state();
    let connected = tokio::time::timeout(
        options.connect_timeout,
        state.wait_for(|s| matches!(s, LinkState::Up { .. })),
    )
    .await
    .is_ok_and(|up| up.is_ok());
    if !connected {
        let _ = stop.send(true);
        let _ = task.await;
        return Err(anyhow!(
            "the broker at {} answered, then the monitor could not set up its queue within {} s",
            config.default.transport_url,
            options.connect_timeout.as_secs()
        ));
    }
    if options.format == Format::Table {
        println!(
            "watching {} on exchange {exchange} (Ctrl-C to stop)",
            options
                .template
                .as_deref()
                .map_or("every template".to_owned(), |t| format!("template {t}"))
        );
        println!("{}", header());
    }
    let max_size = config.default.max_message_size;
    let secrets = read_secrets(config);
    let mut view = LiveView::new(options.template.clone());
    let (mut dropped, mut unverified) = (0u64, 0u64);
    let mut seconds = tokio::time::interval(Duration::from_secs(1));
    seconds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = options.duration.map(|d| tokio::time::Instant::now() + d);
    let end = async {
        match until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(delivery) = deliveries.recv() => match decode(&delivery, max_size, secrets.as_ref()) {
                Ok(heard) => {
                    if let Some(line) = view.take(Utc::now(), heard) {
                        emit(&line, options.format);
                    }
                }
                Err(Unshown::Unreadable) => dropped += 1,
                Err(Unshown::Unverified) => unverified += 1,
            },
            _ = seconds.tick() => {
                for line in view.second(Utc::now()) {
                    emit(&line, options.format);
                }
            }
        }
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    report_unshown(dropped, unverified);
    Ok(())
}

fn report_unshown(unreadable: u64, unverified: u64) {
    if unreadable > 0 {
        eprintln!("WARNING: {unreadable} unreadable messages dropped");
    }
    if unverified > 0 {
        eprintln!("WARNING: {unverified} agent messages without their VM's MAC not shown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("shop 0.25 s"), "shop 0.25 s");
        assert_eq!(
            printable("evil\u{1b}[2J\r\nname"),
            "evil\\u{1b}[2J\\r\\nname"
        );
        assert_eq!(printable("café"), "café");
    }

    #[test]
    fn one_template_or_all_and_every_notification_topic() {
        assert_eq!(
            bindings(Some("shop"), &["notifications".into(), "ops".into()]),
            [
                "status.shop",
                "metrics.shop",
                "heartbeat.shop.*",
                "notifications.*",
                "ops.*"
            ]
        );
        assert_eq!(
            bindings(None, &[]),
            ["status.#", "metrics.#", "heartbeat.#"]
        );
    }
}
