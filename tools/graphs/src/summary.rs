//! The run in a few numbers (Markdown): per phase the settled response time, the VMs at
//! its end, the reaction time (phase start to the first scaling decision) and, for high
//! phases, the settle time (phase start to the 5-second mean under the target for good);
//! overall the failed requests, VM-seconds, scaling actions and seconds over target.

use std::fmt::Write;

use autoscaler_core::timeseries::{mean_response_time as mean_response, settled_from, Row};
use chrono::{DateTime, Utc};

use crate::data::{Phase, Run};

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

/// The summary as Markdown.
pub fn markdown(run: &Run) -> String {
    let mut out = String::new();
    let target = run.target();
    let group = run.rows.first().map_or("", |r| r.group.as_str());
    let _ = writeln!(out, "# Load test of `{group}`\n");
    let _ = writeln!(out, "Target mean response time: {target} s.\n");
    if !run.phases.is_empty() {
        let _ = writeln!(
            out,
            "| Phase | Kind | Clients | Length | Settled mean response time | VMs at its end | Reaction | Settle | Failed + non-2xx |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for phase in &run.phases {
            let rows = within(run, phase.start, phase.end);
            // Settled: the last third of the phase.
            let tail = &rows[rows.len() - rows.len() / 3..];
            let settled = mean_response(tail);
            let vms = rows.last().map(|r| r.vms_active + r.vms_booting);
            let reaction = rows
                .iter()
                .find(|r| r.decision == "scale_out" || r.decision == "scale_in")
                .map(|r| run.x(r.time) - run.x(phase.start));
            let settle_time = if phase.is_high() {
                settle(run, phase)
            } else {
                None
            };
            let label = if phase.label.is_empty() {
                String::new()
            } else {
                format!(" ({})", phase.label)
            };
            let _ = writeln!(
                out,
                "| {}{label} | {} | {} | {:.0} s | {} | {} | {} | {} | {} |",
                phase.phase,
                phase.kind,
                phase.clients,
                run.x(phase.end) - run.x(phase.start),
                settled.map_or_else(|| "-".to_owned(), |m| format!("{m:.3} s")),
                vms.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                seconds(reaction),
                if phase.is_high() {
                    seconds(settle_time)
                } else {
                    "-".to_owned()
                },
                phase.failed + phase.non_2xx,
            );
        }
        let _ = writeln!(out);
    }
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
    if !run.phases.is_empty() {
        let _ = writeln!(
            out,
            "- requests: {complete} complete, {failed} failed or not 2xx (ab)"
        );
    }
    let _ = writeln!(out, "- VM-seconds (web VMs, all states): {vm_seconds:.0}");
    let _ = writeln!(out, "- scaling actions: {actions}");
    let _ = writeln!(out, "- seconds over target: {over:.0}");
    out
}
