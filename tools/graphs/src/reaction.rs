//! The reaction checks of a load-test run (issue 16, item 4), beside `acceptance.rs`'s:
//! in every high phase that the policy scaled out in,
//!
//! 8. the scale-out was decided within [`DECISION_LIMIT_SECONDS`] of the phase's start
//!    (5 s that the seed's spike rule makes the policy wait, plus its measurement);
//! 9. the response time settled under the target within [`SETTLE_AFTER_BOOT_SECONDS`] of
//!    the booted VMs being active: settle <= decision + boot + 2 s, where *boot* is
//!    measured from the run (from the scale-out's row to the first row with as many
//!    active web VMs as it decided) and *settle* is the first row after the decision from
//!    which the mean response time of each of the next 5 rows (seconds) is under the
//!    target. Per second, not the summary's trailing 5-second mean: that mean lags the
//!    site by design (after 36 clients go from 1 VM at 0.45 s to 3 at 0.15 s, it needs 4
//!    fast seconds to average under 0.2 s), and the check is about the site; 5 seconds in
//!    a row keep one lucky second from counting. A VM the demo kills later in the phase
//!    does not count against the reaction; that the mean then stays under the target is
//!    check 5's.
//!
//! A phase without a scale-out is not judged here (check 4 says whether it needed one).
//! Check 9 was reported and not judged while each VM joining cost the splitter a graceful
//! reload, which stalled the site for 0.6-1.8 s; members now join through jkstatus with no
//! reload, and the acceptance runs settle within the limit (doc/policy.md, "Reaction and
//! settle").
//! Pure.

use autoscaler_core::timeseries::{Row, SETTLE_WINDOW_ROWS};

use crate::{
    acceptance::{self, Outcome, Verdict},
    data::{Phase, Run},
};

/// The longest a scale-out may take from the start of the load that calls for it.
pub const DECISION_LIMIT_SECONDS: f64 = 6.5;
/// A row this soon after the one before is an early tick's, not a second of its own.
const EARLY_ROW_MS: i64 = 500;
/// How long after the booted VMs are active the 5-second mean may stay over the target.
pub const SETTLE_AFTER_BOOT_SECONDS: f64 = 2.0;

const DECISION_CHECK: &str = "scale-out decided within 6.5 s of the high phase's start";
const SETTLE_CHECK: &str = "response time settled under the target within decision + boot + 2 s";

/// What one high phase's scale-out took, seconds from the phase's start (`boot` from the
/// decision); `None` where the run never got there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reaction {
    pub decision: f64,
    pub boot: Option<f64>,
    pub settle: Option<f64>,
}

/// The reaction in `phase`, when the policy scaled out in it.
pub fn reaction(run: &Run, phase: &Phase) -> Option<Reaction> {
    let rows: Vec<&Row> = run
        .rows
        .iter()
        .filter(|r| r.time >= phase.start && r.time < phase.end)
        .collect();
    let at = rows.iter().position(|r| r.decision == "scale_out")?;
    let since_start = |r: &Row| run.x(r.time) - run.x(phase.start);
    let decided = rows[at];
    let decision = since_start(decided);
    let boot = rows[at..]
        .iter()
        .find(|r| r.vms_active >= decided.desired)
        .map(|r| since_start(r) - decision);
    let target = run.target();
    // Seconds, not rows: a tick that came early (a scale-out, a VM joining) wrote a row
    // less than a second after the one before, often before any new metrics; such a row
    // neither proves nor breaks anything.
    let mut seconds: Vec<&Row> = Vec::new();
    for r in &rows[at..] {
        if seconds
            .last()
            .is_none_or(|last| (r.time - last.time).num_milliseconds() >= EARLY_ROW_MS)
        {
            seconds.push(r);
        }
    }
    let under = |r: &&Row| r.requests > 0 && r.mean_response_time.is_some_and(|m| m < target);
    let settle = (0..seconds.len().saturating_sub(SETTLE_WINDOW_ROWS - 1))
        .find(|&i| seconds[i..i + SETTLE_WINDOW_ROWS].iter().all(under))
        .map(|i| since_start(seconds[i]));
    Some(Reaction {
        decision,
        boot,
        settle,
    })
}

/// Checks 8 and 9 for every high phase of at least 5 s with a scale-out.
pub fn check(run: &Run) -> Vec<Verdict> {
    let mut out = Vec::new();
    for phase in run.phases.iter().filter(|p| p.is_high()) {
        let length = (phase.end - phase.start).num_milliseconds() as f64 / 1000.0;
        if length < 5.0 {
            continue;
        }
        let Some(r) = reaction(run, phase) else {
            continue;
        };
        let name = acceptance::name(run, phase);
        out.push(verdict(
            DECISION_CHECK,
            r.decision <= DECISION_LIMIT_SECONDS,
            format!(
                "{name}: scale-out decided {:.2} s into the phase",
                r.decision
            ),
        ));
        out.push(match (r.boot, r.settle) {
            (Some(boot), Some(settle)) => {
                let limit = r.decision + boot + SETTLE_AFTER_BOOT_SECONDS;
                let mut detail = format!(
                    "{name}: decision {:.2} s + boot {boot:.2} s + 2 s = {limit:.2} s; \
                     every second under the target from {settle:.2} s on (5 s at least)",
                    r.decision
                );
                if settle > limit {
                    detail.push_str(&format!(": over by {:.2} s", settle - limit));
                }
                verdict(SETTLE_CHECK, settle <= limit, detail)
            }
            (None, _) => verdict(
                SETTLE_CHECK,
                false,
                format!("{name}: the VMs the scale-out decided were never all active in the phase"),
            ),
            (Some(boot), None) => verdict(
                SETTLE_CHECK,
                false,
                format!(
                    "{name}: decision {:.2} s, boot {boot:.2} s; never 5 seconds in a row \
                     under the target in the phase",
                    r.decision
                ),
            ),
        });
    }
    out
}

fn verdict(check: &'static str, passed: bool, detail: String) -> Verdict {
    Verdict {
        check,
        outcome: if passed { Outcome::Pass } else { Outcome::Fail },
        detail,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::data::Phases;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn phase(start_ms: i64, seconds: i64) -> Phase {
        Phase {
            phase: 4,
            label: "high".into(),
            kind: "high".into(),
            clients: 36,
            seconds: seconds as u32,
            start: t(start_ms),
            end: t(start_ms) + TimeDelta::seconds(seconds),
            complete: 100,
            failed: 0,
            failed_connect: 0,
            failed_receive: 0,
            failed_length: 0,
            failed_exceptions: 0,
            non_2xx: 0,
            mean_ms: None,
        }
    }

    /// Rows at 0.5 s past each second, 60 s: 36 clients on 1 VM (80 req/s, 0.45 s) until
    /// `active_at`, 3 VMs (240 req/s, 0.15 s) from then, after `stall` seconds in which
    /// nothing completes (a graceful reload); the scale-out's row at `decided_at` (an
    /// extra row between two ticks), 2 VMs booting from it.
    fn run(decided_at: f64, active_at: i64, stall: i64) -> Run {
        let mut times: Vec<f64> = (0..60).map(|s| s as f64 + 0.5).collect();
        times.push(decided_at);
        times.sort_by(f64::total_cmp);
        let rows = times
            .into_iter()
            .map(|x| {
                let active = x >= active_at as f64;
                let stalled = active && x < (active_at + stall) as f64;
                let decided = x >= decided_at;
                let (requests, mean) = match (active, stalled) {
                    (_, true) => (0, None),
                    (true, false) => (240, Some(0.15)),
                    (false, _) => (80, Some(0.45)),
                };
                Row {
                    time: t((x * 1000.0) as i64),
                    group: "site".into(),
                    requests,
                    rate: requests as f64,
                    mean_response_time: mean,
                    p95_response_time: None,
                    in_flight: Some(36.0),
                    vms_booting: if decided && !active { 2 } else { 0 },
                    vms_active: if active { 3 } else { 1 },
                    vms_draining: 0,
                    desired: if decided { 3 } else { 1 },
                    target_response_time: 0.2,
                    metric: Some(2.5),
                    decision: if x == decided_at { "scale_out" } else { "hold" }.into(),
                    reason: String::new(),
                }
            })
            .collect();
        Run {
            rows,
            phases: vec![phase(0, 60)],
            source: Phases::LoadTest,
            origin: t(0),
        }
    }

    #[test]
    fn a_quick_decision_and_a_settle_right_after_the_boot_pass() {
        // Decided at 5.8 s; 3 active from 11 s: boot 5.7 s (to the row at 11.5), every
        // second under the target from 11.5 s: 11.5 <= 5.8 + 5.7 + 2.
        let r = reaction(&run(5.8, 11, 0), &phase(0, 60)).unwrap();
        assert!((r.decision - 5.8).abs() < 1e-9, "{r:?}");
        assert!((r.boot.unwrap() - 5.7).abs() < 1e-9, "{r:?}");
        assert!((r.settle.unwrap() - 11.5).abs() < 1e-9, "{r:?}");
        let verdicts = check(&run(5.8, 11, 0));
        assert_eq!(verdicts.len(), 2);
        assert!(
            verdicts.iter().all(|v| v.outcome == Outcome::Pass),
            "{verdicts:?}"
        );
    }

    #[test]
    fn a_stall_after_the_boot_fails_the_settle() {
        // Three seconds in which nothing completes: settled from 14.5 > 13.5.
        let verdicts = check(&run(5.8, 11, 3));
        assert_eq!(verdicts[0].outcome, Outcome::Pass, "{:?}", verdicts[0]);
        assert_eq!(verdicts[1].outcome, Outcome::Fail, "{:?}", verdicts[1]);
        let detail = &verdicts[1].detail;
        assert!(detail.contains("from 14.50 s"), "{detail}");
        assert!(detail.contains("over by 1.00 s"), "{detail}");
    }

    #[test]
    fn an_early_ticks_empty_row_neither_proves_nor_breaks_the_settle() {
        let mut r = run(5.8, 11, 0);
        // A VM joined at 13.6: an early tick's row with no metrics yet.
        let mut early = r
            .rows
            .iter()
            .find(|row| row.time == t(13_500))
            .unwrap()
            .clone();
        early.time = t(13_600);
        early.requests = 0;
        early.mean_response_time = None;
        r.rows.push(early);
        r.rows.sort_by_key(|row| row.time);
        let got = reaction(&r, &phase(0, 60)).unwrap();
        assert!((got.settle.unwrap() - 11.5).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn a_late_decision_fails() {
        let verdicts = check(&run(8.5, 14, 0));
        assert_eq!(verdicts[0].outcome, Outcome::Fail, "{:?}", verdicts[0]);
        assert!(
            verdicts[0].detail.contains("8.50 s"),
            "{}",
            verdicts[0].detail
        );
    }

    #[test]
    fn no_scale_out_no_verdict() {
        let mut r = run(5.8, 11, 0);
        for row in &mut r.rows {
            row.decision = "hold".into();
        }
        assert!(check(&r).is_empty());
    }
}
