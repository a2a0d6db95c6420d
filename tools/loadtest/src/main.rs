//! `autoscaler-loadtest`: plays a load-test scenario (`tools/scenarios/`) against a site
//! with ab, like the seed's scripts: a timestamped line at the start and end of every
//! phase with its clients and whether it is high or low load, the phases as CSV for the
//! graphs, and ab's results added up. Exit 0 when every request succeeded, 1 when any
//! failed (or ab could not run), 2 for a bad command line or scenario.
//!
//! `autoscaler-loadtest phases-from --log FILE --csv FILE` turns the timestamped output of
//! a load script of one's own into the same phase CSV (`script_log.rs`). Exit 0, 1 when a
//! file cannot be read or written, 2 for a log without usable phase lines.

mod ab;
mod runner;
mod script_log;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Plays a load-test scenario with ab and records its phases.
#[derive(Debug, Parser)]
#[command(
    name = "autoscaler-loadtest",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Write the phases (times, clients, kind, ab's results) to this CSV file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// The ab program (apache2-utils).
    #[arg(long, value_name = "PATH", default_value = "ab")]
    ab: PathBuf,
    /// The scenario file: one phase a line, `<seconds> <clients> [label]`.
    #[arg(required = true)]
    scenario: Option<PathBuf>,
    /// The page to load, e.g. http://127.0.1.1:8000/webserver/index.jsp
    #[arg(required = true)]
    url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Turns a load script's timestamped output into the phase CSV.
    ///
    /// The script prints a line `<time> <clients> [label]` as each phase starts (e.g. echo
    /// "$(date -Is) 36 high" before `ab -c 36 -t 60 URL`) and `<time> end` after the
    /// last; ab's reports in between give each phase its request counts.
    PhasesFrom {
        /// The script's output (standard output and error, as printed).
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// Where the phase CSV goes.
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (&args.command, &args.scenario, &args.url) {
        (Some(Command::PhasesFrom { log, csv }), _, _) => phases_from(log, csv),
        (None, Some(scenario), Some(url)) => play(&args, scenario, url),
        // clap requires the scenario and the URL without a subcommand.
        _ => ExitCode::from(2),
    }
}

fn play(args: &Args, path: &std::path::Path, url: &str) -> ExitCode {
    let scenario = match autoscaler_core::scenario::Scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(2);
        }
    };
    let options = runner::Options {
        url: url.to_owned(),
        ab: args.ab.clone(),
        csv: args.csv.clone(),
    };
    println!(
        "scenario {}: {} phases, {} s, against {}",
        path.display(),
        scenario.phases.len(),
        scenario.seconds(),
        options.url
    );
    let mut stdout = std::io::stdout();
    match runner::play(&scenario, &options, &mut stdout) {
        Ok(total) => {
            println!("{}", runner::summary(&total));
            if total.unsuccessful() > 0 {
                eprintln!("ERROR: {} requests did not succeed", total.unsuccessful());
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::from(1)
        }
    }
}

fn phases_from(log: &std::path::Path, csv: &std::path::Path) -> ExitCode {
    let text = match std::fs::read(log) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("ERROR: cannot read {}: {e}", log.display());
            return ExitCode::from(1);
        }
    };
    let found = match script_log::phases(&log.display().to_string(), &text) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = runner::write_phases(csv, &found.phases) {
        eprintln!("ERROR: {e}");
        return ExitCode::from(1);
    }
    for p in &found.phases {
        println!(
            "phase {}: {} clients for {} s, {} load{}: {} complete, {} failed, {} non-2xx (ab)",
            p.phase,
            p.clients,
            p.seconds,
            p.kind,
            if p.label.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.label)
            },
            p.complete,
            p.failed,
            p.non_2xx
        );
    }
    if found
        .phases
        .iter()
        .all(|p| p.complete + p.failed + p.non_2xx == 0)
    {
        println!("no ab report in the log: the phases have no request counts");
    }
    if found.stray_reports > 0 {
        eprintln!(
            "WARNING: {} ab reports were printed outside any phase (before the first phase \
             line or after an end line): not counted",
            found.stray_reports
        );
    }
    println!("{} phases written to {}", found.phases.len(), csv.display());
    ExitCode::SUCCESS
}
