//! The acceptance checks of a load-test run (`autoscaler-graphs --check`), read from the
//! two CSVs and the figure files: what the seed asks of an auto-scaler, each as a verdict
//! with the numbers behind it.
//!
//! 1. no failed request (ab's failed and non-2xx counts, every phase);
//! 2. the web VMs within `[min_vms, max_vms]` every second (at least `min_vms` booting or
//!    active once the site first had them, except while the template is destroyed);
//! 3. no scaling action for a burst shorter than 5 s (from its start for 15 s, or until
//!    the next high phase begins if that is sooner);
//! 4. the VMs rise in every high phase;
//! 5. the 5-second mean response time settles under the target before each high phase
//!    ends (`timeseries::settled_from`);
//! 6. the VMs fall in every low phase of at least [`LOW_PHASE_FALL_SECONDS`] after a high
//!    one;
//! 7. the figure files decode as images of the size asked for.
//!
//! Pure but for [`figures`], which reads the two files.

use std::path::Path;

use autoscaler_core::timeseries::{settled_from, Row};
use chrono::{DateTime, Duration, Utc};

use crate::data::{Phase, Run};

/// A phase shorter than this is a burst the policy must not act on (the seed's 5 s).
const BURST_SECONDS: f64 = 5.0;
/// How long after a burst's start an action would still be an answer to it.
const BURST_ECHO_SECONDS: i64 = 15;
/// Low phases at least this long must see the VMs fall (scale-in waits 15 s of calm,
/// `[policy] scale_in_delay`, plus the drain).
pub const LOW_PHASE_FALL_SECONDS: f64 = 30.0;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub check: &'static str,
    pub passed: bool,
    /// The numbers behind it, for a person.
    pub detail: String,
}

fn verdict(check: &'static str, passed: bool, detail: String) -> Verdict {
    Verdict {
        check,
        passed,
        detail,
    }
}

fn web_vms(r: &Row) -> u32 {
    r.vms_active + r.vms_booting + r.vms_draining
}

fn capacity(r: &Row) -> u32 {
    r.vms_active + r.vms_booting
}

fn rows_in(run: &Run, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<&Row> {
    run.rows
        .iter()
        .filter(|r| r.time >= from && r.time < to)
        .collect()
}

fn is_action(r: &Row) -> bool {
    r.decision == "scale_out" || r.decision == "scale_in"
}

fn seconds(phase: &Phase) -> f64 {
    (phase.end - phase.start).num_milliseconds() as f64 / 1000.0
}

/// Checks 1 to 6 on the run, for a template of `min_vms` to `max_vms` web VMs.
pub fn check_run(run: &Run, min_vms: u32, max_vms: u32) -> Vec<Verdict> {
    let mut out = Vec::new();
    let complete: u64 = run.phases.iter().map(|p| p.complete).sum();
    let failed: u64 = run.phases.iter().map(|p| p.failed).sum();
    let non_2xx: u64 = run.phases.iter().map(|p| p.non_2xx).sum();
    out.push(verdict(
        "no failed request",
        complete > 0 && failed == 0 && non_2xx == 0,
        format!("{complete} complete, {failed} failed, {non_2xx} non-2xx (ab)"),
    ));

    let mut serving = false;
    let mut outside = Vec::new();
    for r in run.rows.iter().filter(|r| r.decision != "destroy") {
        serving |= r.vms_active >= min_vms;
        if web_vms(r) > max_vms || (serving && capacity(r) < min_vms) {
            outside.push(format!(
                "{:.0} s: {} active, {} booting, {} draining",
                run.x(r.time),
                r.vms_active,
                r.vms_booting,
                r.vms_draining
            ));
        }
    }
    out.push(verdict(
        "web VMs within [min_vms, max_vms] every second",
        outside.is_empty(),
        if outside.is_empty() {
            format!("{} rows, all within [{min_vms}, {max_vms}]", run.rows.len())
        } else {
            format!("outside at {}", outside.join("; "))
        },
    ));

    for (i, phase) in run.phases.iter().enumerate() {
        let name = format!(
            "phase {} ({}, {} clients)",
            phase.phase, phase.kind, phase.clients
        );
        let rows = rows_in(run, phase.start, phase.end);
        if seconds(phase) < BURST_SECONDS {
            // An action is the burst's doing until the next high phase starts (which
            // may rightly be acted on), for at most BURST_ECHO_SECONDS.
            let echo_end = phase.start + Duration::seconds(BURST_ECHO_SECONDS);
            let until = run.phases[i + 1..]
                .iter()
                .find(|p| p.is_high())
                .map_or(echo_end, |p| p.start.min(echo_end));
            let actions: Vec<String> = rows_in(run, phase.start, until)
                .iter()
                .filter(|r| is_action(r))
                .map(|r| format!("{} at {:.0} s", r.decision, run.x(r.time)))
                .collect();
            out.push(verdict(
                "no action for a burst shorter than 5 s",
                actions.is_empty(),
                format!(
                    "{name}, {:.0} s, {:.0} s watched: {}",
                    seconds(phase),
                    (until - phase.start).num_seconds(),
                    if actions.is_empty() {
                        "no action".to_owned()
                    } else {
                        actions.join(", ")
                    }
                ),
            ));
            continue;
        }
        let (Some(first), Some(_)) = (rows.first(), rows.last()) else {
            out.push(verdict(
                "time series covers every phase",
                false,
                format!("{name}: no row"),
            ));
            continue;
        };
        if phase.is_high() {
            let start = capacity(first);
            let peak = rows.iter().map(|r| capacity(r)).max().unwrap_or(start);
            out.push(verdict(
                "VMs rise in high load",
                peak > start,
                format!("{name}: {start} at its start, {peak} at most"),
            ));
            let settled = settled_from(&rows, run.target());
            out.push(verdict(
                "mean response time settles under the target before the high phase ends",
                settled.is_some(),
                match settled {
                    Some(i) => format!(
                        "{name}: under {} s from {:.0} s into the phase to its end",
                        run.target(),
                        run.x(rows[i].time) - run.x(phase.start)
                    ),
                    None => format!("{name}: still over {} s at its end", run.target()),
                },
            ));
        } else if seconds(phase) >= LOW_PHASE_FALL_SECONDS {
            let Some(high) = run.phases[..i]
                .iter()
                .rev()
                .find(|p| p.is_high() && seconds(p) >= BURST_SECONDS)
            else {
                continue;
            };
            let peak = rows_in(run, high.start, high.end)
                .iter()
                .map(|r| capacity(r))
                .max()
                .unwrap_or(0);
            let end = rows.last().map_or(0, |r| capacity(r));
            out.push(verdict(
                "VMs fall in low load",
                end < peak || peak <= min_vms,
                format!(
                    "{name}: {peak} at most in phase {}, {end} at its end",
                    high.phase
                ),
            ));
        }
    }
    out
}

/// Check 7: `graphs.png` and `graphs.svg` in `dir` decode as images of `size` pixels.
pub fn figures(dir: &Path, size: (u32, u32)) -> Vec<Verdict> {
    let png = dir.join("graphs.png");
    let png_verdict = match image::open(&png) {
        Ok(img) => {
            let got = (img.width(), img.height());
            verdict(
                "graphs.png decodes at the size asked for",
                got == size,
                format!("{}: {}x{} pixels", png.display(), got.0, got.1),
            )
        }
        Err(e) => verdict(
            "graphs.png decodes at the size asked for",
            false,
            format!("{}: {e}", png.display()),
        ),
    };
    let svg = dir.join("graphs.svg");
    let svg_verdict = match std::fs::read_to_string(&svg) {
        Ok(text) => match svg_size(&text) {
            Ok(got) => verdict(
                "graphs.svg parses at the size asked for",
                got == size,
                format!("{}: {}x{}", svg.display(), got.0, got.1),
            ),
            Err(e) => verdict(
                "graphs.svg parses at the size asked for",
                false,
                format!("{}: {e}", svg.display()),
            ),
        },
        Err(e) => verdict(
            "graphs.svg parses at the size asked for",
            false,
            format!("{}: {e}", svg.display()),
        ),
    };
    vec![png_verdict, svg_verdict]
}

/// The width and height of an SVG document's root, after parsing the whole document.
fn svg_size(text: &str) -> Result<(u32, u32), String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" {
        return Err(format!(
            "root element is <{}>, not <svg>",
            root.tag_name().name()
        ));
    }
    let side = |name| {
        root.attribute(name)
            .and_then(|v| v.trim_end_matches("px").parse::<u32>().ok())
            .ok_or_else(|| format!("the root has no whole-pixel {name}"))
    };
    Ok((side("width")?, side("height")?))
}

/// The verdicts as text, one line each.
pub fn report(verdicts: &[Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| {
            format!(
                "{} {}: {}\n",
                if v.passed { "PASS" } else { "FAIL" },
                v.check,
                v.detail
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn phase(n: usize, kind: &str, clients: u32, from: i64, to: i64, failed: u64) -> Phase {
        Phase {
            phase: n,
            label: kind.into(),
            kind: kind.into(),
            clients,
            seconds: (to - from) as u32,
            start: t(from),
            end: t(to),
            complete: 100,
            failed,
            failed_connect: 0,
            failed_receive: failed,
            failed_length: 0,
            failed_exceptions: 0,
            non_2xx: 0,
            mean_ms: None,
        }
    }

    /// `vms(s)` web VMs active, `mean(s)` response time, `decision(s)` at second s.
    fn run(
        seconds: i64,
        vms: impl Fn(i64) -> u32,
        mean: impl Fn(i64) -> f64,
        decision: impl Fn(i64) -> &'static str,
        phases: Vec<Phase>,
    ) -> Run {
        let rows = (0..seconds)
            .map(|s| Row {
                time: t(s),
                group: "site".into(),
                requests: 80,
                rate: 80.0,
                mean_response_time: Some(mean(s)),
                p95_response_time: Some(mean(s)),
                in_flight: Some(4.0),
                vms_booting: 0,
                vms_active: vms(s),
                vms_draining: 0,
                desired: vms(s),
                target_response_time: 0.2,
                metric: Some(1.0),
                decision: decision(s).into(),
                reason: String::new(),
            })
            .collect();
        Run {
            rows,
            phases,
            origin: t(0),
        }
    }

    /// low 0-20 with a burst 20-23, low 23-40, high 40-100, low 100-160.
    fn phases(failed: u64) -> Vec<Phase> {
        vec![
            phase(1, "low", 4, 0, 20, 0),
            phase(2, "high", 60, 20, 23, 0),
            phase(3, "low", 4, 23, 40, 0),
            phase(4, "high", 36, 40, 100, failed),
            phase(5, "low", 4, 100, 160, 0),
        ]
    }

    fn good_vms(s: i64) -> u32 {
        if (48..120).contains(&s) {
            3
        } else {
            1
        }
    }

    fn good_mean(s: i64) -> f64 {
        if (40..56).contains(&s) {
            0.4
        } else {
            0.15
        }
    }

    fn good_decision(s: i64) -> &'static str {
        match s {
            48 => "scale_out",
            118 => "scale_in",
            _ => "hold",
        }
    }

    #[test]
    fn a_good_run_passes_every_check() {
        let run = run(160, good_vms, good_mean, good_decision, phases(0));
        let verdicts = check_run(&run, 1, 4);
        let text = report(&verdicts);
        assert!(verdicts.iter().all(|v| v.passed), "{text}");
        let checks: Vec<&str> = verdicts.iter().map(|v| v.check).collect();
        assert_eq!(
            checks,
            [
                "no failed request",
                "web VMs within [min_vms, max_vms] every second",
                "no action for a burst shorter than 5 s",
                "VMs rise in high load",
                "mean response time settles under the target before the high phase ends",
                "VMs fall in low load",
            ],
            "{text}"
        );
        assert!(
            text.contains(
                "PASS VMs rise in high load: phase 4 (high, 36 clients): 1 at its start, 3 at most"
            ),
            "{text}"
        );
        assert!(
            text.contains("under 0.2 s from 20 s into the phase"),
            "{text}"
        );
    }

    fn failing(verdicts: &[Verdict]) -> Vec<&'static str> {
        verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| v.check)
            .collect()
    }

    #[test]
    fn each_fault_fails_its_own_check() {
        let r = run(160, good_vms, good_mean, good_decision, phases(2));
        assert_eq!(failing(&check_run(&r, 1, 4)), ["no failed request"]);

        let r = run(160, good_vms, good_mean, good_decision, phases(0));
        assert_eq!(
            failing(&check_run(&r, 1, 2)),
            ["web VMs within [min_vms, max_vms] every second"]
        );
        assert_eq!(
            failing(&check_run(&r, 2, 4)),
            ["web VMs within [min_vms, max_vms] every second"],
            "1 VM once serving with min 2"
        );

        let burst = |s| {
            if s == 30 {
                "scale_out"
            } else {
                good_decision(s)
            }
        };
        let r = run(160, good_vms, good_mean, burst, phases(0));
        assert_eq!(
            failing(&check_run(&r, 1, 4)),
            ["no action for a burst shorter than 5 s"]
        );

        let r = run(
            160,
            |_| 1,
            |s| if s >= 40 { 0.4 } else { 0.15 },
            |_| "hold",
            phases(0),
        );
        assert_eq!(
            failing(&check_run(&r, 1, 4)),
            [
                "VMs rise in high load",
                "mean response time settles under the target before the high phase ends"
            ]
        );

        let stays = |s| if s >= 48 { 3 } else { 1 };
        let r = run(160, stays, good_mean, good_decision, phases(0));
        assert_eq!(failing(&check_run(&r, 1, 4)), ["VMs fall in low load"]);
    }

    #[test]
    fn svg_size_reads_the_root_of_a_well_formed_document() {
        assert_eq!(
            svg_size(
                r#"<svg width="1600" height="1800" xmlns="http://www.w3.org/2000/svg"><rect/></svg>"#
            ),
            Ok((1600, 1800))
        );
        assert!(svg_size(r#"<svg width="1600" height="1800"><rect></svg>"#).is_err());
        assert_eq!(
            svg_size(r#"<html width="1" height="1"/>"#),
            Err("root element is <html>, not <svg>".into())
        );
    }
}
