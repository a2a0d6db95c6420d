//! autoscaler-agent: the small process inside every VM, started by the image at boot with
//! no manual step. Both roles heartbeat (`heartbeat.<group>.<vm>`) with whether the VM's
//! server answers; the splitter also publishes the site's metrics each second and
//! applies pool updates to mod_jk (see `splitter`).
//!
//! `autoscaler-agent [--config-file F | --user-data F | flags] [role flags]` runs the
//! agent: the web image passes `--check-url`, the splitter image `--request-log`,
//! `--workers-properties`, `--jkstatus-url` and `--httpd-config`.
//! `autoscaler-agent write-files --user-data F --root D` does cloud-init's `write_files`
//! for local images. Exit codes: 0 after SIGTERM/SIGINT, 1 on a bad setting or file,
//! 2 on a usage error.

mod aggregate;
mod cloud_init;
mod heartbeat;
mod http;
mod log_follower;
mod modjk;
mod request_log;
mod settings;
mod splitter;
mod web;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use autoscaler_messaging::{
    signing::{Signature, Signer},
    AgentConfig, Durability, Link, LinkConfig, LinkHandle, QueueSpec, Subscription, Topology,
};
use clap::{Parser, Subcommand};
use settings::RoleSettings;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::info;

/// Threads of tokio's blocking pool (file reads, name look-ups): the log follower's read
/// and a look-up by the broker link at most at once.
const MAX_BLOCKING_THREADS: usize = 2;

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-agent",
    version,
    about = "The autoscaler agent of one VM",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: settings::RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the user data's cloud-config `write_files` under ROOT (local images).
    WriteFiles {
        #[arg(long, value_name = "FILE")]
        user_data: PathBuf,
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::WriteFiles { user_data, root }) = cli.command {
        return match cloud_init::write_files(&user_data, &root) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ERROR: {e}");
                ExitCode::from(1)
            }
        };
    }
    let (config, role) = match settings::agent_config(&cli.run).and_then(|config| {
        let role = settings::role_settings(&cli.run, config.role)?;
        Ok((config, role))
    }) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=warn,amq_protocol=warn".into()),
        )
        .with_ansi(false)
        .init();
    // One thread runs every task. The blocking pool (tokio::fs for the request log, name
    // look-ups) gets at most two threads instead of tokio's 512: each thread costs its own
    // stack and malloc arena, and the agent never has more than two such calls at once
    // (doc/agent.md has the measured resident memory).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let address = settings::announced_address(&cli.run, &role);
    let code = runtime.block_on(run(config, role, address));
    // Exit without tearing the runtime down under lapin's I/O thread (see the conductor).
    std::process::exit(code)
}

async fn run(config: AgentConfig, role: RoleSettings, address: Option<std::net::IpAddr>) -> i32 {
    let url = match config.transport_url.parse() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("ERROR: transport_url: {e}");
            return 1;
        }
    };
    let (stop, stopped) = watch::channel(false);
    let (mut term, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ERROR: cannot install signal handlers: {e}");
            return 1;
        }
    };
    // The splitter's mod_jk, read before anything starts: a file the agent cannot use is
    // a bad setting (exit 1), not something to find out at the first pool update.
    let modjk = match open_modjk(&role) {
        Ok(modjk) => modjk,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let name = format!("autoscaler-agent.{}", config.vm_id);
    let signer = Arc::new(Signer::new(
        config.vm_id.clone(),
        config.message_key.clone(),
    ));
    let (link, link_task, pool_deliveries) =
        start_link(&config, url, &name, modjk.is_some(), stopped.clone());
    info!(group = %config.group, vm = %config.vm_id, role = %config.role, "agent starting");
    let beats = start_heartbeat(
        &config,
        &role,
        modjk.as_ref(),
        &name,
        address,
        (link.clone(), signer.clone()),
        stopped.clone(),
    );
    let splitter_task = match (modjk, &role) {
        (Some(modjk), RoleSettings::Splitter(paths)) => Some(start_splitter(
            &config,
            paths,
            &name,
            modjk,
            (link, signer),
            pool_deliveries,
            stopped,
        )),
        _ => None,
    };

    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    info!("agent stopping");
    let _ = stop.send(true);
    let _ = beats.await;
    if let Some(task) = splitter_task {
        // A pool update in hand finishes (its commands have their own timeouts).
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), link_task).await;
    0
}

/// The splitter's mod_jk files, `None` for a web VM.
fn open_modjk(role: &RoleSettings) -> Result<Option<splitter::ModJk>, String> {
    match role {
        RoleSettings::Splitter(paths) => splitter::ModJk::open(paths).map(Some),
        RoleSettings::Web { .. } => Ok(None),
    }
}

/// Deliveries of the splitter's pool queue, as the link hands them over.
type PoolDeliveries = mpsc::Receiver<autoscaler_messaging::link::Delivery>;

/// The broker link (its handle and task) and, for a splitter, the pool updates'
/// deliveries.
fn start_link(
    config: &AgentConfig,
    url: autoscaler_messaging::TransportUrl,
    name: &str,
    splitter: bool,
    stopped: watch::Receiver<bool>,
) -> (LinkHandle, tokio::task::JoinHandle<()>, PoolDeliveries) {
    let topology = Topology::new(
        config.control_exchange.clone(),
        Durability::from_amqp_durable_queues(config.amqp_durable_queues),
    );
    // Pool updates reach the splitter through a queue of its own. Capacity 1 with
    // prefetch 1: the broker holds the rest.
    let (pool_sender, pool_deliveries) = mpsc::channel(1);
    let mut subscriptions = Vec::new();
    if splitter {
        subscriptions.push(Subscription {
            queue: topology.splitter_queue(&config.vm_id, &config.message_key.pool_queue_tag()),
            // Declared and bound by the conductor (this login may declare nothing):
            // the spec is the conductor's, for reference only.
            spec: QueueSpec::splitter_pool(),
            bindings: vec![Topology::pool_key(&config.group)],
            prefetch: 1,
            ack: true,
            sender: pool_sender,
        });
    }
    // Waits of a few seconds at most between attempts: the conductor's grace after its
    // own link returns must cover every agent's return. Passive: the agent's login may
    // declare nothing (doc/security.md).
    let link = Link::new(
        LinkConfig::for_agent(url, name.to_owned()),
        topology,
        subscriptions,
    )
    .passive();
    let (link, link_task) = link.spawn(stopped);
    (link, link_task, pool_deliveries)
}

/// The heartbeat task, with the role's liveness check.
fn start_heartbeat(
    config: &AgentConfig,
    role: &RoleSettings,
    modjk: Option<&splitter::ModJk>,
    name: &str,
    address: Option<std::net::IpAddr>,
    (link, signer): (LinkHandle, Arc<Signer>),
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (check, site_url) = local_check(role, modjk);
    tokio::spawn(heartbeat::run(
        link,
        heartbeat::Settings {
            exchange: config.control_exchange.clone(),
            sender: name.to_owned(),
            group: config.group.clone(),
            vm_id: config.vm_id.clone(),
            role: config.role,
            interval: config.heartbeat_interval,
            ttl: config.telemetry_ttl,
            check_timeout: config.check_timeout,
            check,
            site_url,
            address,
            signer,
        },
        stopped,
    ))
}

/// The splitter's task: metrics and pool updates.
fn start_splitter(
    config: &AgentConfig,
    paths: &settings::SplitterPaths,
    name: &str,
    modjk: splitter::ModJk,
    (link, signer): (LinkHandle, Arc<Signer>),
    mut pool_deliveries: PoolDeliveries,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // Deliveries become plain messages with their acknowledgement as a future, so
    // the splitter's loop knows nothing of lapin.
    let (incoming, incoming_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(mut delivery) = pool_deliveries.recv().await {
            let data = std::mem::take(&mut delivery.data);
            let signature = Signature::of(delivery.properties.headers().as_ref());
            let ack: splitter::Acknowledge = Box::pin(async move {
                delivery
                    .acker
                    .ack(Default::default())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
            let message = splitter::Incoming {
                data,
                signature,
                ack,
            };
            if incoming.send(message).await.is_err() {
                break;
            }
        }
    });
    let settings = splitter::Settings {
        exchange: config.control_exchange.clone(),
        sender: name.to_owned(),
        group: config.group.clone(),
        vm_id: config.vm_id.clone(),
        telemetry_ttl: config.telemetry_ttl,
        request_log: paths.request_log.clone(),
        workers_properties: paths.workers_properties.clone(),
        signer,
    };
    let splitter = splitter::Splitter::new(settings, link, modjk);
    tokio::spawn(splitter.run(incoming_rx, stopped))
}

/// The role's local check behind `serving`, and the site's URL (splitter).
fn local_check(
    role: &RoleSettings,
    modjk: Option<&splitter::ModJk>,
) -> (Option<web::LocalCheck>, Option<String>) {
    match (role, modjk) {
        (RoleSettings::Web { check_url }, _) => (check_url.clone().map(web::LocalCheck::new), None),
        (_, Some(modjk)) => (Some(modjk.check()), modjk.site_url()),
        (RoleSettings::Splitter(_), None) => (None, None),
    }
}
