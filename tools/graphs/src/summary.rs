//! The run in a few numbers (Markdown): where the phases come from and a web VM's
//! capacity; per phase the settled response time, the VMs at its end, the VMs its load
//! needs (by the capacity model), the reaction time (phase start to the first scaling
//! decision) and, for high phases, the settle time (phase start to the 5-second mean
//! under the target for good); overall the failed requests, VM-seconds, scaling actions
//! and seconds over target.

use std::fmt::Write;

use autoscaler_core::timeseries::{mean_response_time as mean_response, settled_from, Row};
use chrono::{DateTime, Utc};

use crate::{
    capacity::Capacity,
    data::{Phase, Phases, Run},
    load,
};

fn within(run: &Run, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<&Row> {
    run.rows
        .iter()
        .filter(|r| r.time >= from && r.time < to)
        .collect()
}

fn total_vms(r: &Row) -> u32 {
    r.vms_active + r.vms_booting + r.vms_draining
}

/// Seconds from the phase's start until the 5-second mean went under the target and
/// stayed there to the phase's end; `None` when it never did.
fn settle(run: &Run, phase: &Phase) -> Option<f64> {
    let rows = within(run, phase.start, phase.end);
    match settled_from(&rows, run.target())? {
        0 => Some(0.0),
        i => Some(run.x(rows[i].time) - run.x(phase.start)),
    }
}

fn seconds(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"))
}

/// The summary as Markdown; `capacity` is a web VM's, when known.
pub fn markdown(run: &Run, capacity: Option<&Capacity>) -> String {
    let mut out = String::new();
    let target = run.target();
    let group = run.rows.first().map_or("", |r| r.group.as_str());
    let _ = writeln!(out, "# Load test of `{group}`\n");
    let _ = writeln!(out, "Target mean response time: {target} s.\n");
    let _ = writeln!(out, "{}\n", source(run));
    if let Some(c) = capacity {
        let _ = writeln!(out, "Capacity: {}.\n", c.describe());
    }
    if !run.phases.is_empty() {
        phase_table(&mut out, run, capacity);
    }
    overall(&mut out, run);
    out
}

/// Where the phases come from, one sentence.
fn source(run: &Run) -> String {
    match run.source {
        Phases::LoadTest => "Phases: the load test's phase file.".to_owned(),
        Phases::Measured { threshold: Some(t) } => format!(
            "Phases: found from the load the splitter measured (no phase file): high while \
             the requests in flight ({}-second median) are above {t:.1}, the two-level split \
             of this run's load; periods of {} s or more.",
            load::SMOOTHING_ROWS,
            load::MIN_PERIOD_SECONDS
        ),
        Phases::Measured { threshold: None } => {
            "Phases: found from the load the splitter measured (no phase file): one level of \
             load throughout, no high-load period."
                .to_owned()
        }
    }
}

/// The per-phase table.
fn phase_table(out: &mut String, run: &Run, capacity: Option<&Capacity>) {
    let target = run.target();
    let load = match run.source {
        Phases::LoadTest => "Clients",
        Phases::Measured { .. } => "In flight",
    };
    let _ = writeln!(
        out,
        "| Phase | Kind | {load} | Length | Settled mean response time | VMs at its end | VMs needed | Reaction | Settle | Failed + non-2xx |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for phase in &run.phases {
        let rows = within(run, phase.start, phase.end);
        // Settled: the last third of the phase.
        let tail = &rows[rows.len() - rows.len() / 3..];
        let settled = mean_response(tail);
        let vms = rows.last().map(|r| r.vms_active + r.vms_booting);
        let needed = capacity.map(|c| c.needed(f64::from(phase.clients), target));
        let reaction = rows
            .iter()
            .find(|r| r.decision == "scale_out" || r.decision == "scale_in")
            .map(|r| run.x(r.time) - run.x(phase.start));
        let label = if phase.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", phase.label)
        };
        let _ = writeln!(
            out,
            "| {}{label} | {} | {} | {:.0} s | {} | {} | {} | {} | {} | {} |",
            phase.phase,
            phase.kind,
            phase.clients,
            run.x(phase.end) - run.x(phase.start),
            settled.map_or_else(|| "-".to_owned(), |m| format!("{m:.3} s")),
            vms.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            match needed {
                Some(Some(n)) => n.to_string(),
                Some(None) => "none reach it".to_owned(),
                None => "-".to_owned(),
            },
            seconds(reaction),
            if phase.is_high() {
                seconds(settle(run, phase))
            } else {
                "-".to_owned()
            },
            phase.failed + phase.non_2xx,
        );
    }
    let _ = writeln!(out);
}

/// The run as a whole.
fn overall(out: &mut String, run: &Run) {
    let target = run.target();
    let failed: u64 = run.phases.iter().map(|p| p.failed + p.non_2xx).sum();
    let complete: u64 = run.phases.iter().map(|p| p.complete).sum();
    let interval = |i: usize| {
        if i + 1 < run.rows.len() {
            run.x(run.rows[i + 1].time) - run.x(run.rows[i].time)
        } else {
            1.0
        }
    };
    let vm_seconds: f64 = (0..run.rows.len())
        .map(|i| f64::from(total_vms(&run.rows[i])) * interval(i))
        .sum();
    let actions = run
        .rows
        .iter()
        .filter(|r| r.decision == "scale_out" || r.decision == "scale_in")
        .count();
    let over: f64 = (0..run.rows.len())
        .filter(|&i| run.rows[i].mean_response_time.is_some_and(|m| m > target))
        .map(interval)
        .sum();
    let _ = writeln!(out, "Overall:\n");
    if run.source == Phases::LoadTest {
        let _ = writeln!(
            out,
            "- requests: {complete} complete, {failed} failed or not 2xx (ab)"
        );
    }
    let _ = writeln!(out, "- VM-seconds (web VMs, all states): {vm_seconds:.0}");
    let _ = writeln!(out, "- scaling actions: {actions}");
    let _ = writeln!(out, "- seconds over target: {over:.0}");
}
