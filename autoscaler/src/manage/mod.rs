//! autoscaler-manage: the operator CLI, nova-manage style.
//!
//! `autoscaler-manage [--config-file F]... [--config-dir D] [--debug] [--format table|json]
//! <category> <action>`. Exit codes, for every command: 0 done, 1 error (one line on
//! stderr starting `ERROR:`), 2 usage error. `config` commands work without a broker;
//! the others ask the conductor over RabbitMQ.

pub mod output;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;

use self::output::{print, Format, Table};
use crate::{
    cli_args::ConfigArgs,
    conductor::api::{Request, StatusView, TemplateRecord, VmView},
    conf::{self, Config},
    logging::{self, LogTarget},
    messaging::{rpc::RpcClient, Topology},
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
}

#[derive(Debug, Subcommand)]
enum ConductorAction {
    /// The conductor's broker link and message counters.
    Status,
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
        timeout,
        command,
    } = cli;
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
    let ask = |request: &Request| call(&config, timeout, request);
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
            let record: TemplateRecord =
                decode(ask(&Request::TemplateInstantiate { source, text })?)?;
            print(format, &record, || {
                record_table(std::slice::from_ref(&record))
            });
            Ok(())
        }
        Category::Template(TemplateAction::Destroy { target })
        | Category::DestroyTemplate { file: target } => {
            let name = name_of(&target)?;
            let record: TemplateRecord = decode(ask(&Request::TemplateDestroy { name })?)?;
            print(format, &record, || {
                record_table(std::slice::from_ref(&record))
            });
            Ok(())
        }
        Category::Template(TemplateAction::Show { name }) => {
            let records: Vec<TemplateRecord> = decode(ask(&Request::TemplateShow { name })?)?;
            print(format, &records, || record_table(&records));
            Ok(())
        }
        Category::Vm(VmAction::List { template }) => {
            let vms: Vec<VmView> = decode(ask(&Request::VmList { template })?)?;
            print(format, &vms, || vm_table(&vms));
            Ok(())
        }
        Category::Conductor(ConductorAction::Status) => {
            let status: StatusView = decode(ask(&Request::Status)?)?;
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

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .context("unexpected answer from the conductor (is it another version?)")
}

/// One request/reply round trip with the conductor.
fn call(
    config: &Config,
    timeout: Duration,
    request: &Request,
) -> anyhow::Result<serde_json::Value> {
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
        let link = config.link_config(name.clone());
        let topology = Topology::new(config.default.control_exchange.clone());
        let mut client = RpcClient::connect(&link, topology, name).await?;
        let answer = client.call(request, timeout).await;
        client.close().await;
        Ok(answer?)
    })
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
    Table {
        header: vec![
            "vm",
            "template",
            "role",
            "last heartbeat",
            "age (s)",
            "heartbeats",
        ],
        rows: vms
            .iter()
            .map(|vm| {
                vec![
                    vm.vm_id.clone(),
                    vm.group.clone(),
                    vm.role.to_string(),
                    vm.last_heartbeat.format("%H:%M:%S%.3f").to_string(),
                    format!("{:.1}", vm.heartbeat_age),
                    vm.heartbeats.to_string(),
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
