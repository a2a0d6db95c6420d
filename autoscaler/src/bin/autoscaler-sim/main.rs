//! `autoscaler-sim`: the simulator's command line (`doc/simulator.md`).
//!
//! - `run`: one scenario with one policy; writes the conductor's per-second CSV (and
//!   the load test's phase CSV), so `autoscaler-graphs` draws it;
//! - `bench`: the scenario suite with every policy; prints the comparison table and
//!   writes it as Markdown;
//! - `overhead`: the overhead figures (policy tick, message encoding, simulated seconds
//!   per wall second, the conductor's intake from RabbitMQ);
//! - `ha-bench`: two whole conductors at 1,000 sites over the real broker and MariaDB,
//!   an in-memory cloud and simulated agents: CPU, statements, failover (`doc/ha.md`).
//!
//! Exit 0 on success, 1 on an error (an `ERROR:` line on stderr), 2 for a bad command
//! line.

mod ha_bench;
mod overhead;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use autoscaler::{
    conductor::timeseries::TimeSeries,
    scenario::PhaseRecord,
    sim::{
        distribution::Distribution,
        load::LoadKind,
        peers::PolicyKind,
        score::score,
        suite::{self, SUITE},
        world::{self, epoch, Fault, FaultKind, SimConfig},
    },
};
use chrono::TimeDelta;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-sim",
    version,
    about = "The autoscaler's discrete-event simulator"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario with one policy and writes the conductor-format CSV.
    Run(RunArgs),
    /// Runs the scenario suite with every policy and prints the comparison table.
    Bench(BenchArgs),
    /// Measures the overheads: policy tick, message coding, simulator speed, intake.
    Overhead(overhead::OverheadArgs),
    /// Two whole conductors at scale: CPU, database statements, failover time.
    HaBench(ha_bench::HaBenchArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A scenario file (`<seconds> <clients> [label]` a line: closed-loop clients) or,
    /// ending in .csv, an open-loop trace (`seconds,rate[,label]`).
    load: PathBuf,
    /// Where `<group>.csv` goes (created if missing; an existing file is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Also write the phases as autoscaler-loadtest's --csv does, for autoscaler-graphs.
    #[arg(long, value_name = "FILE")]
    phases: Option<PathBuf>,
    #[arg(long, default_value = "autoscaler")]
    policy: PolicyKind,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "sim")]
    group: String,
    #[arg(long, default_value_t = 1)]
    min_vms: u32,
    #[arg(long, default_value_t = 4)]
    max_vms: u32,
    /// The template's target_response_time, seconds.
    #[arg(long, default_value_t = 0.2)]
    target: f64,
    /// Requests a VM serves at once.
    #[arg(long, default_value_t = 4)]
    threads: u32,
    /// Service time: det:S, exp:MEAN or lognormal:MEAN,CV (seconds).
    #[arg(long, default_value = "det:0.05")]
    service: Distribution,
    /// Boot delay, the same forms.
    #[arg(long, default_value = "lognormal:30,0.1")]
    boot: Distribution,
    /// Crash the oldest active VM at this second (repeatable).
    #[arg(long, value_name = "SECONDS")]
    crash_at: Vec<f64>,
    /// Stop the oldest active VM's heartbeats at this second (repeatable).
    #[arg(long, value_name = "SECONDS")]
    heartbeat_lost_at: Vec<f64>,
    /// Seconds simulated after the load ends.
    #[arg(long, default_value_t = 0.0)]
    tail: f64,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The folder the suite's files are in.
    #[arg(long, value_name = "DIR", default_value = "tools/scenarios")]
    scenarios: PathBuf,
    /// The seeds each scenario and policy runs with; figures are their means.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Write the table here as Markdown: between the lines `<!-- bench-table:start -->`
    /// and `<!-- bench-table:end -->` when the file has them, else the whole file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Only these scenarios (by name), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run(a) => run(&a),
        Command::Bench(a) => bench(&a),
        Command::Overhead(a) => overhead::main(&a),
        Command::HaBench(a) => ha_bench::main(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check_number(what: &str, x: f64, min: f64, max: f64) -> Result<()> {
    if !(x.is_finite() && x >= min && x <= max) {
        bail!("--{what} {x}: expected a number from {min} to {max}");
    }
    Ok(())
}

fn run(a: &RunArgs) -> Result<()> {
    check_number("target", a.target, 0.001, 3600.0)?;
    check_number("tail", a.tail, 0.0, 86_400.0)?;
    if a.min_vms > a.max_vms || a.max_vms == 0 || a.max_vms > 10_000 {
        bail!(
            "--min-vms {} --max-vms {}: expected 0 <= min <= max, 1 <= max <= 10000",
            a.min_vms,
            a.max_vms
        );
    }
    if a.threads == 0 || a.threads > 10_000 {
        bail!("--threads {}: expected 1 to 10000", a.threads);
    }
    let mut faults = Vec::new();
    for (&at, kind) in a.crash_at.iter().map(|t| (t, FaultKind::Crash)).chain(
        a.heartbeat_lost_at
            .iter()
            .map(|t| (t, FaultKind::HeartbeatLost)),
    ) {
        check_number("crash-at/--heartbeat-lost-at", at, 0.0, 86_400.0 * 7.0)?;
        faults.push(Fault { at, kind });
    }
    let load = suite::load_file(&a.load)?;
    let config = SimConfig {
        seed: a.seed,
        group: a.group.clone(),
        min_vms: a.min_vms,
        max_vms: a.max_vms,
        target_response_time: a.target,
        threads: a.threads,
        service: a.service,
        boot: a.boot,
        faults,
        tail: a.tail,
        ..SimConfig::local_images(a.seed)
    };
    let mut policy = a.policy.build(&config, &load);
    let started = Instant::now();
    let result = world::run(&config, &load, policy.as_mut());
    let wall = started.elapsed().as_secs_f64();
    let mut series = TimeSeries::new(a.out.clone());
    // A run replaces the file (the conductor's writer appends, which would mix runs).
    let path = series.path(&config.group);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    for row in &result.rows {
        series
            .append(row)
            .with_context(|| format!("cannot write the time series under {}", a.out.display()))?;
    }
    if let Some(path) = &a.phases {
        write_phases(path, &load, &result)?;
    }
    let s = score(&result, &load, &config);
    println!("{}", series.path(&config.group).display());
    println!(
        "{} s simulated in {wall:.2} s ({} events); policy {}: {} s over target ({} outside the unavoidable windows), {:.0} VM-s, {} actions, {} of {} requests failed",
        result.seconds, result.events, a.policy, s.over_target, s.over_avoidable, s.vm_seconds, s.actions, s.failed, s.requests
    );
    Ok(())
}

fn write_phases(
    path: &Path,
    load: &autoscaler::sim::load::Load,
    result: &world::RunResult,
) -> Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut writer = csv::Writer::from_path(path).with_context(context)?;
    let time = |t: f64| epoch() + TimeDelta::milliseconds((t * 1000.0).round() as i64);
    for (i, (phase, counts)) in load.phases.iter().zip(&result.phases).enumerate() {
        writer
            .serialize(PhaseRecord {
                phase: i + 1,
                label: phase.label.clone(),
                kind: phase.kind.as_str().to_owned(),
                clients: phase.level.round() as u32,
                seconds: phase.seconds().round() as u32,
                start: time(phase.start),
                end: time(phase.end),
                complete: counts.complete,
                failed: counts.failed,
                failed_connect: 0,
                failed_receive: 0,
                failed_length: 0,
                failed_exceptions: counts.failed,
                non_2xx: 0,
                mean_ms: None,
            })
            .with_context(context)?;
    }
    writer.flush().with_context(context)?;
    if load.kind == LoadKind::Open {
        eprintln!("note: an open-loop trace's phases carry the arrival rate in the clients column");
    }
    Ok(())
}

const START: &str = "<!-- bench-table:start -->";
const END: &str = "<!-- bench-table:end -->";

fn bench(a: &BenchArgs) -> Result<()> {
    if a.seeds.is_empty() {
        bail!("--seeds: at least one seed");
    }
    let entries: Vec<_> = SUITE
        .iter()
        .filter(|e| a.only.is_empty() || a.only.iter().any(|n| n == e.name))
        .cloned()
        .collect();
    if entries.is_empty() {
        let names: Vec<&str> = SUITE.iter().map(|e| e.name).collect();
        bail!(
            "--only {}: no such scenario (the suite: {})",
            a.only.join(","),
            names.join(", ")
        );
    }
    let started = Instant::now();
    let results = suite::run_suite(&a.scenarios, &entries, &PolicyKind::ALL, &a.seeds)?;
    let wall = started.elapsed().as_secs_f64();
    let table = suite::markdown(&results);
    let goal = suite::goal(&results);
    let seeds: Vec<String> = a.seeds.iter().map(u64::to_string).collect();
    let mut text = format!(
        "Means over seeds {}; {} runs.\n\n{table}\nThe goal (fewer seconds over target than each peer at no more VM-seconds, within 1.15× of the oracle's VM-seconds):\n\n",
        seeds.join(", "),
        entries.len() * PolicyKind::ALL.len() * a.seeds.len(),
    );
    for (line, _) in &goal {
        text.push_str(&format!("- {line}\n"));
    }
    text.push_str("\nWhether any peer does better on both counts (fewer seconds over target at no more VM-seconds):\n\n");
    for line in suite::dominated(&results) {
        text.push_str(&format!("- {line}\n"));
    }
    print!("{text}");
    println!("\n({wall:.1} s)");
    let violations: u32 = results
        .iter()
        .flat_map(|s| s.by_policy.iter().map(|(_, f)| f.bound_violations))
        .sum();
    if violations > 0 {
        bail!("{violations} decisions broke the bounds");
    }
    if let Some(path) = &a.markdown {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let new = match (old.find(START), old.find(END)) {
            (Some(s), Some(e)) if s < e => {
                format!("{}{START}\n{text}{}", &old[..s], &old[e..])
            }
            _ => text.clone(),
        };
        std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nwritten to {}", path.display());
    }
    Ok(())
}
