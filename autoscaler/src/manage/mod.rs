//! autoscaler-manage: the operator CLI, nova-manage style.
//!
//! `autoscaler-manage [--config-file F]... [--config-dir D] [--debug] [--format table|json]
//! <category> <action>`. Exit codes, for every command: 0 done, 1 error (one line on
//! stderr starting `ERROR:`), 2 usage error. `config` commands work without a broker;
//! `broker` and `monitor` need the broker only; the others ask the conductor over
//! RabbitMQ.

pub mod broker;
pub mod monitor;
pub mod output;
pub mod wait;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;

use self::{
    output::{print, Format, Table},
    wait::Session,
};
use crate::{
    cli_args::ConfigArgs,
    conductor::{
        api::{Request, StatusView, TemplateRecord, TemplateView, VmView},
        group::VmState,
    },
    conf::{self, Config},
    logging::{self, LogTarget},
    template::{self, Template},
};

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-manage",
    version,
    about = "Operate the autoscaler service"
)]
pub struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Log at debug level (to stderr).
    #[arg(long, global = true)]
    debug: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: Format,
    /// Do not follow `template instantiate` / `destroy` to the end: return once the
    /// conductor has taken the request (for scripts).
    #[arg(long, global = true)]
    no_wait: bool,
    /// Seconds `template instantiate` / `destroy` follow the group before giving up.
    #[arg(long, value_name = "SECONDS", global = true, default_value_t = 300)]
    wait_timeout: u64,
    /// Seconds to wait for the conductor's answer (default: [DEFAULT] rpc_response_timeout).
    #[arg(long, value_name = "SECONDS", global = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: Option<u64>,
    #[command(subcommand)]
    command: Category,
}

#[derive(Debug, Subcommand)]
enum Category {
    /// Web site templates: instantiate, destroy, show, validate.
    #[command(subcommand)]
    Template(TemplateAction),
    /// VMs of the active templates.
    #[command(subcommand)]
    Vm(VmAction),
    /// The conductor service itself.
    #[command(subcommand)]
    Conductor(ConductorAction),
    /// The configuration files.
    #[command(subcommand)]
    Config(ConfigAction),
    /// The broker's exchange and queues (no conductor needed).
    #[command(subcommand)]
    Broker(BrokerAction),
    /// Watch the sites live from the broker: each second the splitter's requests and
    /// response times, the VMs by state, the conductor's decision and why; notifications
    /// as they come. Needs only the broker, not the conductor's files.
    Monitor {
        /// Only this template (default: every template).
        template: Option<String>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        seconds: Option<u64>,
    },
    /// Alias of `template instantiate FILE` (the seed's spelling).
    #[command(name = "instantiate_template")]
    InstantiateTemplate { file: PathBuf },
    /// Alias of `template destroy FILE` (the seed's spelling).
    #[command(name = "destroy_template")]
    DestroyTemplate { file: String },
}

#[derive(Debug, Subcommand)]
enum TemplateAction {
    /// Validate FILE and make it the active template.
    Instantiate { file: PathBuf },
    /// Destroy the template named in FILE, or called NAME.
    Destroy {
        #[arg(value_name = "FILE|NAME")]
        target: String,
    },
    /// Show the active templates (or the one called NAME).
    Show { name: Option<String> },
    /// Check FILE without contacting the conductor.
    Validate { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum VmAction {
    /// List the VMs the conductor knows.
    List {
        /// Only the VMs of this template.
        #[arg(long)]
        template: Option<String>,
    },
    /// Remove a web VM without failing a request: drain it, then delete it (the
    /// template's minimum is kept with a replacement).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum ConductorAction {
    /// The conductor's broker link and message counters.
    Status,
}

#[derive(Debug, Subcommand)]
enum BrokerAction {
    /// Declare the control exchange, the conductors' request queue and the notification
    /// queues as [oslo_messaging_rabbit] amqp_durable_queues says, deleting first those
    /// the broker holds with the other durability (their messages are lost). Stop every
    /// conductor first; destroy the templates first too (the running VMs' agents lose
    /// their bindings with the exchange).
    Redeclare,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print a sample configuration generated from the option declarations.
    Sample,
    /// Check the configuration files and say what is wrong.
    Validate,
}

/// Runs the CLI; the binary's `main` is just this.
pub fn main() -> ExitCode {
    // As a Unix filter: `autoscaler-manage vm list | head` ends quietly when `head` has
    // read enough, instead of failing on the closed pipe (Rust ignores SIGPIPE).
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let cli = Cli::parse(); // exits 2 on usage errors, 0 on --help/--version
    if let Err(error) = run(cli) {
        // Every line its own `ERROR:` line: a template with three problems reports three.
        for line in format!("{error:#}").lines() {
            eprintln!("ERROR: {line}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        config: args,
        debug,
        format,
        no_wait,
        wait_timeout,
        timeout,
        command,
    } = cli;
    let wait_timeout = Duration::from_secs(wait_timeout);
    // Progress lines would spoil JSON output: they go only to people.
    let quiet = format == Format::Json;
    match &command {
        Category::Config(ConfigAction::Sample) => {
            print!("{}", conf::sample());
            return Ok(());
        }
        Category::Config(ConfigAction::Validate) => return validate_config(&args),
        _ => {}
    }
    let loaded = conf::load(&args.sources())?;
    // The CLI's own logs go to stderr so that stdout stays parseable.
    let _ = logging::init_with(&LogTarget::Stderr, logging::cli_filter(debug));
    for warning in &loaded.warnings {
        eprintln!("WARNING: {warning}");
    }
    let config = loaded.config;
    let ceiling = config.conductor.max_vms_ceiling;
    let timeout = timeout.map_or(config.default.rpc_response_timeout, Duration::from_secs);
    match command {
        Category::Template(TemplateAction::Validate { file }) => {
            let template = Template::load(&file, ceiling)?;
            print(format, &template, || template_table(&[&template]));
            Ok(())
        }
        Category::Template(TemplateAction::Instantiate { file })
        | Category::InstantiateTemplate { file } => {
            // Checked here first so a typo is reported without a round trip.
            Template::load(&file, ceiling)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let source = std::fs::canonicalize(&file)
                .unwrap_or(file)
                .display()
                .to_string();
            let mut session = Session::connect(&config, timeout)?;
            let record: TemplateRecord =
                session.call(&Request::TemplateInstantiate { source, text })?;
            let name = record.template.name().to_owned();
            if no_wait {
                print(format, &record, || {
                    record_table(std::slice::from_ref(&record))
                });
                return Ok(());
            }
            if !quiet {
                println!("template {name}: instantiated; waiting for its site (--no-wait to skip)");
            }
            let view = wait::until_ready(&mut session, &name, wait_timeout, quiet)?;
            match format {
                Format::Json => print(format, &view, || unreachable!()),
                Format::Table => println!(
                    "site ready: {}",
                    view.status
                        .as_ref()
                        .and_then(|s| s.url.as_deref())
                        .unwrap_or("(the splitter announced no URL)")
                ),
            }
            Ok(())
        }
        Category::Template(TemplateAction::Destroy { target })
        | Category::DestroyTemplate { file: target } => {
            let name = name_of(&target)?;
            let mut session = Session::connect(&config, timeout)?;
            let record: TemplateRecord = session.call(&Request::TemplateDestroy { name })?;
            let name = record.template.name().to_owned();
            if no_wait {
                print(format, &record, || {
                    record_table(std::slice::from_ref(&record))
                });
                return Ok(());
            }
            if !quiet {
                println!("template {name}: stopping the splitter, then deleting every VM");
            }
            wait::until_gone(&mut session, &name, wait_timeout, quiet)?;
            if format == Format::Json {
                print(format, &record, || unreachable!());
            }
            Ok(())
        }
        Category::Template(TemplateAction::Show { name }) => {
            let views: Vec<TemplateView> = call(&config, timeout, &Request::TemplateShow { name })?;
            print(format, &views, || {
                let records: Vec<TemplateRecord> = views.iter().map(|v| v.record.clone()).collect();
                let mut table = record_table(&records);
                table.header.push("phase");
                table.header.push("url");
                for (row, view) in table.rows.iter_mut().zip(&views) {
                    let status = view.status.as_ref();
                    row.push(
                        status.map_or("-".into(), |s| format!("{:?}", s.phase).to_lowercase()),
                    );
                    row.push(
                        status
                            .and_then(|s| s.url.clone())
                            .unwrap_or_else(|| "-".into()),
                    );
                }
                table
            });
            Ok(())
        }
        Category::Vm(VmAction::List { template }) => {
            let vms: Vec<VmView> = call(&config, timeout, &Request::VmList { template })?;
            print(format, &vms, || vm_table(&vms));
            Ok(())
        }
        Category::Vm(VmAction::Delete { name }) => {
            let mut session = Session::connect(&config, timeout)?;
            let vm: VmState = session.call(&Request::VmDelete { name: name.clone() })?;
            if !no_wait {
                if !quiet {
                    println!("{name}: draining, then deleting (--no-wait to skip)");
                }
                wait::until_vm_gone(&mut session, &name, wait_timeout, quiet)?;
            }
            print(format, &vm, || Table {
                header: vec!["vm", "status"],
                rows: vec![vec![
                    vm.name.clone(),
                    if no_wait {
                        "draining".into()
                    } else {
                        "deleted".into()
                    },
                ]],
            });
            Ok(())
        }
        Category::Monitor { template, seconds } => {
            if let Some(name) = &template {
                template::validate_name(name)
                    .map_err(|why| anyhow!("{name:?} is not a template name: {why}"))?;
            }
            monitor::run(
                &config,
                monitor::Options {
                    template,
                    duration: seconds.map(Duration::from_secs),
                    format,
                    connect_timeout: timeout,
                },
            )
        }
        Category::Broker(BrokerAction::Redeclare) => broker::run(&config, timeout, format),
        Category::Conductor(ConductorAction::Status) => {
            let status: StatusView = call(&config, timeout, &Request::Status)?;
            print(format, &status, || status_table(&status));
            Ok(())
        }
        Category::Config(_) => unreachable!("handled before loading the configuration"),
    }
}

/// `template destroy` takes a template file (its name is read from it) or a name.
fn name_of(target: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(target);
    if path.is_file() {
        // Only the name matters here; limits are not rechecked for a template that is
        // being removed.
        let template = Template::load(path, u32::MAX)?;
        return Ok(template.name().to_owned());
    }
    template::validate_name(target).map_err(|why| {
        anyhow!("{target:?} is neither a template file nor a template name: {why}")
    })?;
    Ok(target.to_owned())
}

fn validate_config(args: &ConfigArgs) -> anyhow::Result<()> {
    let report = conf::validate(&args.sources());
    for warning in &report.warnings {
        eprintln!("WARNING: {warning}");
    }
    for error in &report.errors {
        eprintln!("ERROR: {error}");
    }
    let files: Vec<String> = report
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let checked = if files.is_empty() {
        "the defaults (no configuration file)".to_owned()
    } else {
        files.join(", ")
    };
    if report.errors.is_empty() {
        println!("OK: {checked}");
        Ok(())
    } else {
        Err(anyhow!("{} error(s) in {checked}", report.errors.len()))
    }
}

/// One request/reply round trip with the conductor, on a connection of its own.
fn call<T: DeserializeOwned>(
    config: &Config,
    timeout: Duration,
    request: &Request,
) -> anyhow::Result<T> {
    Session::connect(config, timeout)?.call(request)
}

fn template_table(templates: &[&Template]) -> Table {
    Table {
        header: vec![
            "name",
            "image",
            "min_vms",
            "max_vms",
            "target_response_time",
            "flavor",
            "network",
        ],
        rows: templates
            .iter()
            .map(|t| {
                vec![
                    t.name().to_owned(),
                    t.image().to_owned(),
                    t.min_vms().to_string(),
                    t.max_vms().to_string(),
                    format!("{} s", t.target_response_time().as_secs_f64()),
                    t.flavor().unwrap_or("-").to_owned(),
                    t.network().unwrap_or("-").to_owned(),
                ]
            })
            .collect(),
    }
}

fn record_table(records: &[TemplateRecord]) -> Table {
    let mut table = template_table(&records.iter().map(|r| &r.template).collect::<Vec<_>>());
    table.header.push("instantiated");
    for (row, record) in table.rows.iter_mut().zip(records) {
        row.push(
            record
                .instantiated_at
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        );
    }
    table
}

fn vm_table(vms: &[VmView]) -> Table {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    Table {
        header: vec![
            "vm",
            "template",
            "role",
            "status",
            "address",
            "heartbeat age (s)",
            "in pool",
            "busy",
        ],
        rows: vms
            .iter()
            .map(|vm| {
                vec![
                    vm.vm_id.clone(),
                    vm.group.clone(),
                    or_dash(vm.role.map(|r| r.to_string())),
                    or_dash(vm.status.map(|s| s.to_string())),
                    or_dash(vm.address.clone()),
                    or_dash(vm.heartbeat_age.map(|a| format!("{a:.1}"))),
                    if vm.in_pool { "yes" } else { "no" }.to_owned(),
                    or_dash(vm.busy.map(|b| b.to_string())),
                ]
            })
            .collect(),
    }
}

fn status_table(s: &StatusView) -> Table {
    let d = &s.dropped;
    let rows = [
        ("host", s.host.clone()),
        ("version", s.version.clone()),
        ("started", s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        ("broker", s.broker.clone()),
        ("templates", s.templates.join(", ")),
        ("requests received", s.received_requests.to_string()),
        ("telemetry received", s.received_telemetry.to_string()),
        (
            "dropped",
            format!(
                "{} (malformed {}, oversized {}, unknown kind {}, bad payload {}, unsupported version {})",
                d.total(),
                d.malformed,
                d.oversized,
                d.unknown_kind,
                d.bad_payload,
                d.unsupported_version
            ),
        ),
    ];
    Table {
        header: vec!["property", "value"],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect(),
    }
}
