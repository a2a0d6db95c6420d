//! autoscaler-agent: the small process inside every VM. It says the VM is alive
//! (heartbeats on `heartbeat.<group>.<vm>`); the splitter role's log tailing and pool
//! updates come with the local-cloud issue.
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 on a bad setting, 2 on a usage error.

mod heartbeat;

use std::{process::ExitCode, time::Duration};

use autoscaler_messaging::{Link, LinkConfig, Role, Topology, TransportUrl};
use clap::Parser;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-agent",
    version,
    about = "The autoscaler agent of one VM"
)]
struct Args {
    /// The broker, in oslo.messaging's transport_url form.
    #[arg(long, env = "AUTOSCALER_TRANSPORT_URL")]
    transport_url: TransportUrl,
    /// The exchange ([DEFAULT] control_exchange of the conductor).
    #[arg(long, env = "AUTOSCALER_EXCHANGE", default_value = "autoscaler")]
    exchange: String,
    /// The template (group) this VM belongs to.
    #[arg(long, env = "AUTOSCALER_GROUP")]
    group: String,
    /// This VM's id.
    #[arg(long, env = "AUTOSCALER_VM_ID")]
    vm_id: String,
    /// web or splitter.
    #[arg(long, env = "AUTOSCALER_ROLE")]
    role: Role,
    /// Seconds between heartbeats.
    #[arg(long, env = "AUTOSCALER_HEARTBEAT_INTERVAL", default_value = "1", value_parser = seconds)]
    heartbeat_interval: Duration,
    /// Seconds a heartbeat may wait on the broker before it is discarded.
    #[arg(long, env = "AUTOSCALER_TELEMETRY_TTL", default_value = "10", value_parser = seconds)]
    telemetry_ttl: Duration,
}

fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 3600"
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=warn,amq_protocol=warn".into()),
        )
        .with_ansi(false)
        .init();
    let (stop, stopped) = watch::channel(false);
    let (mut term, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ERROR: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let name = format!("autoscaler-agent.{}", args.vm_id);
    let link = Link::new(
        LinkConfig::new(args.transport_url.clone(), name.clone()),
        Topology::new(args.exchange.clone()),
        Vec::new(),
    );
    let (link, link_task) = link.spawn(stopped.clone());
    info!(group = %args.group, vm = %args.vm_id, role = %args.role, broker = %args.transport_url, "agent starting");
    let beats = tokio::spawn(heartbeat::run(
        link,
        heartbeat::Settings {
            exchange: args.exchange,
            sender: name,
            group: args.group,
            vm_id: args.vm_id,
            role: args.role,
            interval: args.heartbeat_interval,
            ttl: args.telemetry_ttl,
        },
        stopped,
    ));
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    info!("agent stopping");
    let _ = stop.send(true);
    let _ = beats.await;
    let _ = tokio::time::timeout(Duration::from_secs(3), link_task).await;
    ExitCode::SUCCESS
}
