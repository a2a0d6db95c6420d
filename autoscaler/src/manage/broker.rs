//! `autoscaler-manage broker redeclare`: the control exchange and the lasting queues (the
//! conductors' request queue, the notification queues) declared as
//! `[oslo_messaging_rabbit] amqp_durable_queues` says, after that option changed
//! (`doc/messaging.md`, Durability).
//!
//! RabbitMQ keeps an exchange's or a queue's durability for its life and refuses a
//! declaration that differs, so a change means deleting the object and declaring it
//! again. `rabbitmqctl` cannot delete an exchange and `rabbitmqadmin` needs the management
//! plugin; this does it over AMQP, with the conductor's own declarations. It refuses while
//! a conductor consumes the request queue (a running conductor would race it), and leaves
//! alone what is already declared as configured.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use lapin::{
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    Connection,
};
use serde::Serialize;

use crate::{
    conductor::notifier::Notifier,
    conf::Config,
    manage::output::{print, Format, Table},
    messaging::{
        link,
        topology::{self, RPC_CONDUCTOR},
        QueueSpec, Topology,
    },
};

/// What became of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redeclared {
    /// `exchange` or `queue`.
    pub kind: &'static str,
    pub name: String,
    /// Its durability now.
    pub durable: bool,
    /// Whether it had the other durability, and was deleted and declared again.
    pub replaced: bool,
    /// Messages that were in a replaced queue, lost with it.
    pub messages_dropped: u32,
}

/// An object the conductor declares and keeps.
enum Lasting {
    Exchange,
    Queue {
        name: String,
        spec: QueueSpec,
        bindings: Vec<String>,
    },
}

/// `broker redeclare`: [`redeclare`], printed.
pub fn run(config: &Config, timeout: Duration, format: Format) -> anyhow::Result<()> {
    let done = redeclare(config, timeout)?;
    print(format, &done, || redeclared_table(&done));
    Ok(())
}

/// Connects (within `timeout`), checks that no conductor runs, and brings every lasting
/// object to the configured durability.
pub fn redeclare(config: &Config, timeout: Duration) -> anyhow::Result<Vec<Redeclared>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let name = format!(
            "autoscaler-manage.{}.{}",
            config.default.host,
            std::process::id()
        );
        let link_config = config.link_config(name);
        let (connection, _) = tokio::time::timeout(timeout, link::connect(&link_config, 0))
            .await
            .map_err(|_| {
                anyhow!(
                    "cannot reach the broker at {} within {} s",
                    config.default.transport_url,
                    timeout.as_secs()
                )
            })??;
        let done = redeclare_on(&connection, config).await;
        let _ = connection.close(200, "done".into()).await;
        done
    })
}

async fn redeclare_on(connection: &Connection, config: &Config) -> anyhow::Result<Vec<Redeclared>> {
    let topology = config.topology();
    let rpc_queue = topology.conductor_rpc_queue();
    let consumers = consumers_of(connection, &rpc_queue).await?;
    if consumers > 0 {
        bail!(
            "{consumers} conductor(s) consume {rpc_queue}: stop every conductor first (a \
             running one declares these objects as its own configuration says)"
        );
    }
    // The exchange first: deleting it drops every binding, which the queues' declarations
    // then make again.
    let mut objects = vec![
        Lasting::Exchange,
        Lasting::Queue {
            name: rpc_queue,
            spec: QueueSpec::lasting(topology.durability),
            bindings: vec![RPC_CONDUCTOR.to_owned()],
        },
    ];
    for (name, spec, bindings) in Notifier::from_config(config).queues() {
        objects.push(Lasting::Queue {
            name,
            spec,
            bindings,
        });
    }
    let mut done = Vec::new();
    for object in &objects {
        done.push(bring(connection, &topology, object).await?);
    }
    Ok(done)
}

/// Consumers of `queue`, 0 when it does not exist. A passive declare on a channel of its
/// own: when the queue does not exist the broker closes that channel.
async fn consumers_of(connection: &Connection, queue: &str) -> anyhow::Result<u32> {
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let consumers = match probe
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => q.consumer_count(),
        Err(_) => 0,
    };
    let _ = probe.close(200, "probe done".into()).await;
    Ok(consumers)
}

/// Declares `object`; when the broker holds it with the other durability, deletes it and
/// declares it again. Each attempt on a fresh channel: a refusal closes its channel.
async fn bring(
    connection: &Connection,
    topology: &Topology,
    object: &Lasting,
) -> anyhow::Result<Redeclared> {
    let declare = |channel: lapin::Channel| async move {
        match object {
            Lasting::Exchange => topology.declare_exchange(&channel).await,
            Lasting::Queue {
                name,
                spec,
                bindings,
            } => topology.declare_queue(&channel, name, spec, bindings).await,
        }
    };
    let (kind, name) = match object {
        Lasting::Exchange => ("exchange", topology.exchange.clone()),
        Lasting::Queue { name, .. } => ("queue", name.clone()),
    };
    let mut redeclared = Redeclared {
        kind,
        name: name.clone(),
        durable: topology.durability.is_durable(),
        replaced: false,
        messages_dropped: 0,
    };
    let refused = match declare(connection.create_channel().await?).await {
        Ok(()) => return Ok(redeclared),
        Err(error) => match link::refusal(&error) {
            Some(text) if topology::is_durability_refusal(&text) => text,
            _ => return Err(anyhow!("cannot declare the {kind} {name}: {error}")),
        },
    };
    tracing::debug!(%refused, "deleting, to declare it again");
    let channel = connection.create_channel().await?;
    match object {
        Lasting::Exchange => {
            channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await
        }
        Lasting::Queue { .. } => channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .map(|dropped| redeclared.messages_dropped = dropped),
    }
    .with_context(|| format!("cannot delete the {kind} {name}"))?;
    declare(connection.create_channel().await?)
        .await
        .with_context(|| format!("cannot declare the {kind} {name} again"))?;
    redeclared.replaced = true;
    Ok(redeclared)
}

fn redeclared_table(done: &[Redeclared]) -> Table {
    Table {
        header: vec!["kind", "name", "durable", "done"],
        rows: done
            .iter()
            .map(|r| {
                let what = match r.replaced {
                    true => format!(
                        "deleted ({} messages) and declared again",
                        r.messages_dropped
                    ),
                    false => "declared".to_owned(),
                };
                vec![
                    r.kind.to_owned(),
                    r.name.clone(),
                    if r.durable { "yes" } else { "no" }.to_owned(),
                    what,
                ]
            })
            .collect(),
    }
}
