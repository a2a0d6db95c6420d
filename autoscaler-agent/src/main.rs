//! autoscaler-agent: the small process inside every VM, started by the image at boot with
//! no manual step. It heartbeats (`heartbeat.<group>.<vm>`); the splitter role's log
//! tailing and pool updates are being added (local-cloud issue).
//!
//! `autoscaler-agent [--config-file F | --user-data F | flags]` runs the agent;
//! `autoscaler-agent write-files --user-data F --root D` does cloud-init's `write_files`
//! for local images. Exit codes: 0 after SIGTERM/SIGINT, 1 on a bad setting or file,
//! 2 on a usage error.

mod aggregate;
mod cloud_init;
mod heartbeat;
mod log_follower;
mod request_log;
mod settings;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use autoscaler_messaging::{Link, LinkConfig, Topology};
use clap::{Parser, Subcommand};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::info;

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
    let config = match settings::agent_config(&cli.run) {
        Ok(config) => config,
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(config));
    // Exit without tearing the runtime down under lapin's I/O thread (see the conductor).
    std::process::exit(code)
}

async fn run(config: autoscaler_messaging::AgentConfig) -> i32 {
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
    let name = format!("autoscaler-agent.{}", config.vm_id);
    let link = Link::new(
        LinkConfig::new(url, name.clone()),
        Topology::new(config.control_exchange.clone()),
        Vec::new(),
    );
    let (link, link_task) = link.spawn(stopped.clone());
    info!(group = %config.group, vm = %config.vm_id, role = %config.role, "agent starting");
    let beats = tokio::spawn(heartbeat::run(
        link,
        heartbeat::Settings {
            exchange: config.control_exchange,
            sender: name,
            group: config.group,
            vm_id: config.vm_id,
            role: config.role,
            interval: config.heartbeat_interval,
            ttl: config.telemetry_ttl,
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
    0
}
