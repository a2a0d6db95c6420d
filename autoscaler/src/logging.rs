//! Logging through `tracing`: to stdout (journald adds its own metadata) or to
//! `[DEFAULT] log_dir`/`log_file`, with the level switchable at run time (SIGHUP re-reads
//! `debug`).
//!
//! `RUST_LOG`, when set, wins over `debug`, as an operator debugging one module expects.

use std::{fs::OpenOptions, io, path::PathBuf, sync::Mutex};

use tracing_subscriber::{
    fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl LogTarget {
    /// A file when `path` is set (see `DefaultOpts::log_path`), else standard output.
    pub fn file_or_stdout(path: Option<PathBuf>) -> LogTarget {
        path.map_or(LogTarget::Stdout, LogTarget::File)
    }
}

/// Changes the level of the installed subscriber.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

/// The filter for `debug`: our crates at debug, the AMQP client one step quieter, and
/// sqlx's line per statement (six a tick) left out.
fn filter_for(debug: bool) -> EnvFilter {
    EnvFilter::new(if debug {
        "debug,lapin=info,amq_protocol=info,async_rs=info,sqlx=info"
    } else {
        "info,lapin=warn,amq_protocol=warn,sqlx=warn"
    })
}

/// For a CLI: warnings only (the CLI reports errors itself, as one `ERROR:` line), and
/// nothing from the AMQP client, whose expected channel closes (a passive declare of a
/// missing queue) would read as failures.
pub fn cli_filter(debug: bool) -> EnvFilter {
    EnvFilter::new(if debug {
        "debug,lapin=info,amq_protocol=info,async_rs=info"
    } else {
        "warn,lapin=off,amq_protocol=off"
    })
}

/// Installs the global subscriber for a service. Call once, early in `main`.
pub fn init(target: &LogTarget, debug: bool) -> io::Result<LogHandle> {
    init_with(target, filter_for(debug))
}

/// Installs the global subscriber with `filter` (unless `RUST_LOG` is set).
pub fn init_with(target: &LogTarget, filter: EnvFilter) -> io::Result<LogHandle> {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        filter
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match target {
        LogTarget::Stdout => registry
            .with(fmt::layer().with_writer(io::stdout).with_ansi(false))
            .init(),
        LogTarget::Stderr => registry
            .with(fmt::layer().with_writer(io::stderr).with_ansi(false))
            .init(),
        LogTarget::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            registry
                .with(fmt::layer().with_writer(Mutex::new(file)).with_ansi(false))
                .init()
        }
    }
    Ok(LogHandle {
        filter: handle,
        from_env,
    })
}

impl LogHandle {
    /// Applies a new `debug` value (ignored while `RUST_LOG` rules).
    pub fn set_debug(&self, debug: bool) {
        if self.from_env {
            return;
        }
        if let Err(error) = self.filter.reload(filter_for(debug)) {
            tracing::warn!(%error, "could not change the log level");
        }
    }
}
