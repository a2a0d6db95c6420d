//! `autoscaler-graphs`: from a group's time series (the conductor's CSV) and a load test's
//! phases (`autoscaler-loadtest --csv`, or `autoscaler-loadtest phases-from` a script's
//! log), one figure of four panels sharing the time axis, high-load phases shaded, as
//! `graphs.png` and `graphs.svg`, and `summary.md` beside them. Without phases, the first
//! panel shows the load the splitter measured and the shading the high-load periods found
//! in it (`load.rs`). With `--template`, the summary and the checks know the template's
//! bounds and the web VMs' capacity; with `--check`, the acceptance checks of the run
//! (`acceptance.rs`), printed and written to `check.txt`. Exit 0 on success, 1 when an
//! input cannot be read, a file written, or a check fails.

mod acceptance;
mod capacity;
mod data;
mod draw;
mod load;
mod reaction;
mod summary;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use plotters::prelude::{BitMapBackend, IntoDrawingArea, SVGBackend};

/// Draws a load test's graphs and writes its summary.
#[derive(Debug, Parser)]
#[command(name = "autoscaler-graphs", version)]
struct Args {
    /// The group's time series: <state_path>/timeseries/<group>.csv.
    #[arg(long, value_name = "FILE")]
    timeseries: PathBuf,
    /// The load test's phases (autoscaler-loadtest --csv, or autoscaler-loadtest
    /// phases-from a load script's log); without it, the phases are the high- and
    /// low-load periods found from the load the splitter measured.
    #[arg(long, value_name = "FILE")]
    phases: Option<PathBuf>,
    /// Where graphs.png, graphs.svg and summary.md go (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Figure size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1600x1800", value_parser = size)]
    size: (u32, u32),
    /// The template the run was made with: its bounds and, when it sets web_threads and
    /// web_service_time_ms, the web VMs' capacity (else measured from the run), for the
    /// summary and the checks.
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Also check the run against the seed's criteria (no failed request, VMs within the
    /// template's bounds, no action for a short burst, VMs up in high load and down in low
    /// load, response time settled under the target in each high phase, figures that
    /// decode), judged against what the template and the capacity make possible; exit 1
    /// when a check fails. Needs the template: --template, or as the value (the older
    /// form, --check TEMPLATE).
    #[arg(long, value_name = "TEMPLATE", num_args = 0..=1)]
    check: Option<Option<PathBuf>>,
}

fn size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?}: expected WIDTHxHEIGHT, e.g. 1600x1800"))?;
    let parse = |s: &str| s.parse::<u32>().ok().filter(|n| (400..=8000).contains(n));
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!("{text:?}: each side from 400 to 8000 pixels")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let template_path = match (&args.check, &args.template) {
        (Some(Some(a)), Some(b)) if a != b => {
            return Err(format!(
                "--check {} and --template {} name two templates",
                a.display(),
                b.display()
            )
            .into())
        }
        (Some(Some(path)), _) | (_, Some(path)) => Some(path),
        (Some(None), None) => {
            return Err("--check needs the run's template: --template FILE".into())
        }
        (None, None) => None,
    };
    // Bounds are what the run was held to; the ceiling was checked when it started.
    let template = template_path
        .map(|path| autoscaler_core::template::Template::load(path, u32::MAX))
        .transpose()?;
    let run = data::Run::load(&args.timeseries, args.phases.as_deref())?;
    let capacity = capacity::Capacity::of(template.as_ref(), &run.rows);
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    draw::register_font()?;
    let png = args.out.join("graphs.png");
    draw::figure(
        &BitMapBackend::new(&png, args.size).into_drawing_area(),
        &run,
    )
    .map_err(|e| format!("{}: {e}", png.display()))?;
    let svg = args.out.join("graphs.svg");
    draw::figure(&SVGBackend::new(&svg, args.size).into_drawing_area(), &run)
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    let summary = args.out.join("summary.md");
    std::fs::write(&summary, summary::markdown(&run, capacity.as_ref()))
        .map_err(|e| format!("cannot write {}: {e}", summary.display()))?;
    println!(
        "{}\n{}\n{}",
        png.display(),
        svg.display(),
        summary.display()
    );
    if let (Some(_), Some(template)) = (&args.check, &template) {
        let limits = acceptance::Limits {
            min_vms: template.min_vms(),
            max_vms: template.max_vms(),
            capacity,
        };
        check(args, &run, &limits)?;
    }
    Ok(())
}

/// The checks: printed, written to check.txt; an error when one fails.
fn check(
    args: &Args,
    run: &data::Run,
    limits: &acceptance::Limits,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut verdicts = acceptance::check_run(run, limits);
    verdicts.extend(reaction::check(run));
    verdicts.extend(acceptance::figures(&args.out, args.size));
    let report = acceptance::report(&verdicts);
    let path = args.out.join("check.txt");
    std::fs::write(&path, &report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    print!("{report}");
    let count = |o| verdicts.iter().filter(|v| v.outcome == o).count();
    let (failed, skipped) = (
        count(acceptance::Outcome::Fail),
        count(acceptance::Outcome::Skip),
    );
    if failed > 0 {
        return Err(format!("{failed} of {} checks failed", verdicts.len()).into());
    }
    if skipped > 0 {
        println!(
            "{} checks passed, {skipped} not judged (SKIP: see why above)",
            verdicts.len() - skipped
        );
    } else {
        println!("all {} checks passed", verdicts.len());
    }
    Ok(())
}
