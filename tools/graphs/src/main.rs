//! `autoscaler-graphs`: from a group's time series (the conductor's CSV) and a load test's
//! phases (`autoscaler-loadtest --csv`), one figure of four panels sharing the time axis,
//! high-load phases shaded, as `graphs.png` and `graphs.svg`, and `summary.md` beside
//! them. Exit 0 on success, 1 when an input cannot be read or a file written.

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
    Ok(())
}
