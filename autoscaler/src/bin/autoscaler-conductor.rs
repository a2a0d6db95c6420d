//! `autoscaler-conductor`: loads the configuration, sets up logging and signals, and runs
//! the service (`autoscaler::conductor::run`) until SIGTERM or SIGINT.
//!
//! SIGHUP re-reads the configuration files and applies the mutable options (`debug`).
//! Exit codes: 0 after a clean stop, 1 when it cannot start.

use std::process::ExitCode;

use autoscaler::{
    cli_args::ConfigArgs,
    conductor,
    conf::{self, ConfigSources},
    logging::{self, LogHandle, LogTarget},
};
use clap::Parser;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-conductor",
    version,
    about = "The autoscaler service"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Log at debug level (overrides [DEFAULT] debug).
    #[arg(long)]
    debug: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(serve(cli));
    // Exit without tearing the runtime down: lapin's I/O thread may still be inside a
    // connection attempt (SIGTERM while the broker is unreachable), and a runtime shutting
    // down under it panics. Everything worth closing was closed by `serve`.
    std::process::exit(code)
}

async fn serve(cli: Cli) -> i32 {
    let sources = cli.config.sources();
    let loaded = match conf::load(&sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let options = &loaded.config.default;
    let target = LogTarget::file_or_stdout(options.log_path("autoscaler-conductor"));
    let log = match logging::init(&target, cli.debug || options.debug) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("ERROR: cannot open the log {target:?}: {e}");
            return 1;
        }
    };
    for file in &loaded.files {
        info!(file = %file.display(), "configuration file read");
    }
    for warning in &loaded.warnings {
        warn!("{warning}");
    }

    let (stop, stopped) = watch::channel(false);
    if let Err(e) = spawn_signal_handler(stop, sources, log, cli.debug) {
        eprintln!("ERROR: cannot install signal handlers: {e}");
        return 1;
    }
    match conductor::run(&loaded.config, stopped).await {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            eprintln!("ERROR: {e}");
            1
        }
    }
}

fn spawn_signal_handler(
    stop: watch::Sender<bool>,
    sources: ConfigSources,
    log: LogHandle,
    debug_flag: bool,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: finishing the command in hand, then stopping"); break }
                _ = interrupt.recv() => { info!("SIGINT: stopping"); break }
                _ = hangup.recv() => match conf::load(&sources) {
                    Ok(loaded) => {
                        let debug_on = debug_flag || loaded.config.default.debug;
                        log.set_debug(debug_on);
                        info!(debug = debug_on, "SIGHUP: configuration re-read; mutable options applied, others need a restart");
                    }
                    Err(e) => warn!("SIGHUP: configuration not reloaded: {e}"),
                },
            }
        }
        let _ = stop.send(true);
    });
    Ok(())
}
