//! autoscaler-manage: the operator CLI, nova-manage style.
//!
//! `autoscaler-manage [--config-file F]... [--config-dir D] [--debug] [--format table|json]
//! <category> <action>`. Exit codes, for every command: 0 done, 1 error (one line on
//! stderr starting `ERROR:`), 2 usage error. `config` commands work without a broker;
//! `db` commands and `conductor list` use the database ([`db`]); `broker` and `monitor`
//! need the broker only; the others ask the conductor over RabbitMQ.

pub mod broker;
mod commands;
pub mod db;
mod key;
pub mod monitor;
pub mod output;
mod tables;
pub mod wait;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::anyhow;
use clap::{Parser, Subcommand};

use self::output::Format;
use crate::{
    cli_args::ConfigArgs,
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
    /// Web site templates: instantiate, destroy, list, show, validate.
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
    /// The database: create or upgrade its schema, show its version.
    #[command(subcommand)]
    Db(db::DbAction),
    /// The broker's exchange and queues (no conductor needed).
    #[command(subcommand)]
    Broker(BrokerAction),
    /// The message key file the VMs' keys come from (no conductor needed).
    #[command(subcommand)]
    Key(KeyAction),
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
enum KeyAction {
    /// Make the message key file (mode 0600), or with --rotate put a new key first and
    /// keep the current one as the previous (restart every conductor after).
    Create {
        /// The file (default: [agent] message_key_file, else [DEFAULT] state_path/message.key).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateAction {
    /// Validate FILE and start its site (a template of its own name must not be active).
    Instantiate { file: PathBuf },
    /// Destroy the template named in FILE, or called NAME.
    Destroy {
        #[arg(value_name = "FILE|NAME")]
        target: String,
    },
    /// Show the active templates (or the one called NAME).
    Show { name: Option<String> },
    /// One line per active template: its phase, VMs and URL.
    List,
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
    /// Every conductor known to the database: up or down, last seen, its templates.
    List,
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
    let ctx = Ctx {
        timeout: timeout.map_or(config.default.rpc_response_timeout, Duration::from_secs),
        config,
        format,
        no_wait,
        wait_timeout: Duration::from_secs(wait_timeout),
        // Progress lines would spoil JSON output: they go only to people.
        quiet: format == Format::Json,
    };
    match command {
        Category::Db(action) => db::run(&ctx.config, action, format),
        Category::Conductor(ConductorAction::List) => db::conductor_list(&ctx.config, format),
        Category::Template(TemplateAction::Validate { file }) => commands::validate(&ctx, &file),
        Category::Template(TemplateAction::Instantiate { file })
        | Category::InstantiateTemplate { file } => commands::instantiate(&ctx, file),
        Category::Template(TemplateAction::Destroy { target })
        | Category::DestroyTemplate { file: target } => commands::destroy(&ctx, &name_of(&target)?),
        Category::Template(TemplateAction::Show { name }) => commands::show(&ctx, name),
        Category::Template(TemplateAction::List) => commands::list(&ctx),
        Category::Vm(VmAction::List { template }) => commands::vm_list(&ctx, template),
        Category::Vm(VmAction::Delete { name }) => commands::vm_delete(&ctx, &name),
        Category::Monitor { template, seconds } => {
            if let Some(name) = &template {
                template::validate_name(name)
                    .map_err(|why| anyhow!("{name:?} is not a template name: {why}"))?;
            }
            let options = monitor::Options {
                template,
                duration: seconds.map(Duration::from_secs),
                format,
                connect_timeout: ctx.timeout,
            };
            monitor::run(&ctx.config, options)
        }
        Category::Broker(BrokerAction::Redeclare) => {
            broker::run(&ctx.config, ctx.timeout, ctx.format)
        }
        Category::Conductor(ConductorAction::Status) => commands::status(&ctx),
        Category::Key(KeyAction::Create { file, rotate }) => {
            let agent = &ctx.config.agent;
            let path =
                file.unwrap_or_else(|| agent.message_key_path(&ctx.config.default.state_path));
            println!("{}", key::create(&path, rotate)?);
            Ok(())
        }
        Category::Config(_) => unreachable!("handled before loading the configuration"),
    }
}

/// What every command that talks to the conductor is given.
pub(crate) struct Ctx {
    pub config: Config,
    pub format: Format,
    pub no_wait: bool,
    /// How long `instantiate`, `destroy` and `vm delete` follow their work.
    pub wait_timeout: Duration,
    /// How long to wait for the conductor's answer.
    pub timeout: Duration,
    /// No progress lines (JSON output).
    pub quiet: bool,
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
