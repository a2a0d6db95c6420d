//! `autoscaler-graphs`: from a group's time series (the conductor's CSV) and a load test's
//! phases (`autoscaler-loadtest --csv`), one figure of four panels sharing the time axis,
//! high-load phases shaded, as `graphs.png` and `graphs.svg`, and `summary.md` beside
//! them. With `--check TEMPLATE`, also the acceptance checks of the run
//! (`acceptance.rs`), printed and written to `check.txt`. Exit 0 on success, 1 when an
//! input cannot be read, a file written, or a check fails.

mod acceptance;
mod data;
mod draw;
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
    /// The load test's phases (autoscaler-loadtest --csv); without it, no shading and no
    /// per-phase summary.
    #[arg(long, value_name = "FILE")]
    phases: Option<PathBuf>,
    /// Where graphs.png, graphs.svg and summary.md go (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Figure size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1600x1800", value_parser = size)]
    size: (u32, u32),
    /// Also check the run against the seed's criteria (no failed request, VMs within the
    /// template's bounds, no action for a short burst, VMs up in high load and down in low
    /// load, response time settled under the target in each high phase, figures that
    /// decode), with the template the run was made with; exit 1 when a check fails.
    #[arg(long, value_name = "TEMPLATE", requires = "phases")]
    check: Option<PathBuf>,
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
    let run = data::Run::load(&args.timeseries, args.phases.as_deref())?;
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
    std::fs::write(&summary, summary::markdown(&run))
        .map_err(|e| format!("cannot write {}: {e}", summary.display()))?;
    println!(
        "{}\n{}\n{}",
        png.display(),
        svg.display(),
        summary.display()
    );
    if let Some(template) = &args.check {
        // Bounds are what the run was held to; the ceiling was checked when it started.
        let template = autoscaler_core::template::Template::load(template, u32::MAX)?;
        let mut verdicts = acceptance::check_run(&run, template.min_vms(), template.max_vms());
        verdicts.extend(acceptance::figures(&args.out, args.size));
        let report = acceptance::report(&verdicts);
        let path = args.out.join("check.txt");
        std::fs::write(&path, &report)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        print!("{report}");
        let failed = verdicts.iter().filter(|v| !v.passed).count();
        if failed > 0 {
            return Err(format!("{failed} of {} checks failed", verdicts.len()).into());
        }
        println!("all {} checks passed", verdicts.len());
    }
    Ok(())
}
