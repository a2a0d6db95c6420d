//! `autoscaler-loadtest`: plays a load-test scenario (`tools/scenarios/`) against a site
//! with ab, like the seed's scripts: a timestamped line at the start and end of every
//! phase with its clients and whether it is high or low load, the phases as CSV for the
//! graphs, and ab's results added up. Exit 0 when every request succeeded, 1 when any
//! failed (or ab could not run), 2 for a bad command line or scenario.

mod ab;
mod runner;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// Plays a load-test scenario with ab and records its phases.
#[derive(Debug, Parser)]
#[command(name = "autoscaler-loadtest", version)]
struct Args {
    /// Write the phases (times, clients, kind, ab's results) to this CSV file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// The ab program (apache2-utils).
    #[arg(long, value_name = "PATH", default_value = "ab")]
    ab: PathBuf,
    /// The scenario file: one phase a line, `<seconds> <clients> [label]`.
    scenario: PathBuf,
    /// The page to load, e.g. http://127.0.1.1:8000/webserver/index.jsp
    url: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match autoscaler_core::scenario::Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(2);
        }
    };
    let options = runner::Options {
        url: args.url.clone(),
        ab: args.ab,
        csv: args.csv,
    };
    println!(
        "scenario {}: {} phases, {} s, against {}",
        args.scenario.display(),
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
