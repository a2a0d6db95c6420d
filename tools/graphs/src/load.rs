//! High- and low-load periods found from what the splitter measured, for a run without a
//! load test's phase file (a grader's own `ab` script, say). Pure.
//!
//! The signal is the requests in flight (`in_flight`, Little's law at the splitter: the
//! busy clients of a closed-loop load such as ab's), 0 for a second without measurements,
//! smoothed with a centred median of [`SMOOTHING_ROWS`] seconds so that one odd second (a
//! graceful reload, a lost metric) neither makes nor breaks a period.
//!
//! The rule, a two-level split of the run's own load:
//!
//! 1. the threshold is Otsu's: of every cut between two measured levels, the one that
//!    maximises the between-class variance `w_low × w_high × (mean_high − mean_low)²`;
//! 2. the split stands only when the two levels really differ: the high level's mean at
//!    least [`LEVEL_RATIO`] times the low one's and at least [`MIN_LEVEL_GAP`] request in
//!    flight above it; otherwise the run had one level of load and no period is high;
//! 3. every second is high or low by the threshold; a run of high seconds shorter than
//!    [`MIN_PERIOD_SECONDS`] is a burst, not a period (the seed's 5 s: the policy must not
//!    act on it), and joins the low period around it; then a low run that short between
//!    two high periods joins them.
//!
//! Seconds of a template's destroy (`decision = destroy`) are left out.

use autoscaler_core::timeseries::Row;
use chrono::{DateTime, Utc};

/// A period, high or low, lasts at least this long (seconds).
pub const MIN_PERIOD_SECONDS: f64 = 5.0;
/// The median filter's width, in rows (seconds at the conductor's default tick).
pub const SMOOTHING_ROWS: usize = 5;
/// The high level's mean is at least this many times the low level's.
pub const LEVEL_RATIO: f64 = 2.0;
/// ... and at least this many requests in flight above it (one client kept busy).
pub const MIN_LEVEL_GAP: f64 = 1.0;

/// One period: the rows with `start <= time < end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub high: bool,
    /// Mean requests in flight over its rows (measured, not smoothed).
    pub in_flight: f64,
}

/// What the rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Requests in flight above which a second is high; `None` when the run had one level.
    pub threshold: Option<f64>,
    /// Consecutive, covering every row but a destroy's, in time order.
    pub periods: Vec<Period>,
}

/// Finds the periods of `rows` (in time order, one a second).
pub fn detect(rows: &[Row]) -> Detection {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.decision != "destroy").collect();
    let load: Vec<f64> = rows.iter().map(|r| r.in_flight.unwrap_or(0.0)).collect();
    let smooth = median_filter(&load, SMOOTHING_ROWS);
    let threshold = two_levels(&smooth);
    let Some(&last) = rows.last() else {
        return Detection {
            threshold,
            periods: Vec::new(),
        };
    };
    let high: Vec<bool> = smooth
        .iter()
        .map(|&x| threshold.is_some_and(|t| x > t))
        .collect();
    // Runs of equal seconds: (first row, high). A run ends where the next begins; the last
    // ends a second after the last row.
    let mut runs: Vec<(usize, bool)> = Vec::new();
    for (i, &h) in high.iter().enumerate() {
        if runs.last().is_none_or(|&(_, k)| k != h) {
            runs.push((i, h));
        }
    }
    let end_of = |runs: &[(usize, bool)], k: usize| {
        runs.get(k + 1)
            .map_or(last.time + chrono::Duration::seconds(1), |&(i, _)| {
                rows[i].time
            })
    };
    let seconds = |runs: &[(usize, bool)], k: usize| {
        (end_of(runs, k) - rows[runs[k].0].time).num_milliseconds() as f64 / 1000.0
    };
    // Bursts first, so that a burst never bridges two low runs into a high period.
    for bursts in [true, false] {
        let mut k = 0;
        while k < runs.len() {
            let between = k > 0 && k + 1 < runs.len();
            let short = seconds(&runs, k) < MIN_PERIOD_SECONDS;
            if runs[k].1 == bursts && short && (bursts || between) {
                runs[k].1 = !bursts;
                merge(&mut runs);
                k = k.saturating_sub(1);
            } else {
                k += 1;
            }
        }
    }
    let periods = (0..runs.len())
        .map(|k| {
            let first = runs[k].0;
            let next = runs.get(k + 1).map_or(rows.len(), |&(i, _)| i);
            Period {
                start: rows[first].time,
                end: end_of(&runs, k),
                high: runs[k].1,
                in_flight: load[first..next].iter().sum::<f64>() / (next - first) as f64,
            }
        })
        .collect();
    Detection { threshold, periods }
}

/// Joins neighbouring runs of the same kind.
fn merge(runs: &mut Vec<(usize, bool)>) {
    runs.dedup_by(|later, earlier| later.1 == earlier.1);
}

/// The median of each `width`-wide window centred on each value (narrower at the ends).
fn median_filter(values: &[f64], width: usize) -> Vec<f64> {
    let half = width / 2;
    (0..values.len())
        .map(|i| {
            let mut window =
                values[i.saturating_sub(half)..(i + half + 1).min(values.len())].to_vec();
            window.sort_by(f64::total_cmp);
            window[window.len() / 2]
        })
        .collect()
}

/// Otsu's threshold of `values`, when the two levels it separates differ enough (see the
/// module documentation); a value above it is high.
fn two_levels(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().sum();
    let mut below = 0.0;
    let mut best: Option<(f64, f64, f64, f64)> = None; // (variance, cut, low mean, high mean)
    for i in 0..sorted.len().saturating_sub(1) {
        below += sorted[i];
        if sorted[i] == sorted[i + 1] {
            continue;
        }
        let (n_low, n_high) = ((i + 1) as f64, n - (i + 1) as f64);
        let (low, high) = (below / n_low, (total - below) / n_high);
        let variance = n_low / n * n_high / n * (high - low).powi(2);
        if best.is_none_or(|b| variance > b.0) {
            best = Some((variance, sorted[i], low, high));
        }
    }
    let (_, cut, low, high) = best?;
    (high >= LEVEL_RATIO * low && high - low >= MIN_LEVEL_GAP).then_some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// One row a second with `in_flight(s)` requests in flight.
    fn rows(seconds: i64, in_flight: impl Fn(i64) -> Option<f64>) -> Vec<Row> {
        (0..seconds)
            .map(|s| Row {
                time: t(s),
                group: "site".into(),
                requests: 80,
                rate: 80.0,
                mean_response_time: Some(0.05),
                p95_response_time: Some(0.05),
                in_flight: in_flight(s),
                vms_booting: 0,
                vms_active: 1,
                vms_draining: 0,
                desired: 1,
                target_response_time: 0.2,
                metric: Some(1.0),
                decision: "hold".into(),
                reason: String::new(),
            })
            .collect()
    }

    fn highs(d: &Detection) -> Vec<(i64, i64)> {
        d.periods
            .iter()
            .filter(|p| p.high)
            .map(|p| ((p.start - t(0)).num_seconds(), (p.end - t(0)).num_seconds()))
            .collect()
    }

    /// ci-short.txt as ab plays it: idle, low 4, a 3 s burst of 60, low, high 36, low.
    fn ci_short(s: i64) -> Option<f64> {
        Some(match s {
            0..10 => 0.0,
            10..30 => 4.0,
            30..33 => 60.0,
            33..50 => 4.0,
            50..110 => 36.0,
            _ => 4.0,
        })
    }

    #[test]
    fn the_seeds_alternation_gives_its_high_period_and_not_the_burst() {
        let d = detect(&rows(170, ci_short));
        assert_eq!(highs(&d), [(50, 110)]);
        let threshold = d.threshold.unwrap();
        assert!((4.0..36.0).contains(&threshold), "{threshold}");
        // Periods cover every row, in order, alternating.
        assert_eq!(d.periods.first().unwrap().start, t(0));
        assert_eq!(d.periods.last().unwrap().end, t(170));
        for pair in d.periods.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert_ne!(pair[0].high, pair[1].high);
        }
        let high = d.periods.iter().find(|p| p.high).unwrap();
        assert!((high.in_flight - 36.0).abs() < 1e-9);
    }

    #[test]
    fn one_odd_second_neither_makes_nor_breaks_a_period() {
        let spiky = |s| match s {
            20 | 80 => Some(50.0), // a lone spike in low load
            60 => None,            // a lost second in high load
            _ => ci_short(s),
        };
        assert_eq!(highs(&detect(&rows(170, spiky))), [(50, 110)]);
    }

    #[test]
    fn idle_then_one_ab_run_then_idle_is_one_high_period() {
        let d = detect(&rows(120, |s| {
            Some(if (30..90).contains(&s) { 50.0 } else { 0.0 })
        }));
        assert_eq!(highs(&d), [(30, 90)]);
    }

    #[test]
    fn a_short_dip_inside_high_load_does_not_split_it() {
        let dip = |s| {
            if (70..74).contains(&s) {
                Some(4.0)
            } else {
                ci_short(s)
            }
        };
        assert_eq!(highs(&detect(&rows(170, dip))), [(50, 110)]);
    }

    #[test]
    fn one_level_of_load_has_no_high_period() {
        for level in [0.0, 4.0, 36.0] {
            let d = detect(&rows(100, |_| Some(level)));
            assert_eq!(d.threshold, None, "{level}");
            assert!(highs(&d).is_empty());
            assert_eq!(d.periods.len(), 1);
        }
        // Noise around one level is not two levels.
        let d = detect(&rows(100, |s| Some(4.0 + (s % 3) as f64 * 0.3)));
        assert_eq!(d.threshold, None);
        // Nor is a trickle of under one request in flight over an idle site.
        let d = detect(&rows(100, |s| Some(if s > 50 { 0.6 } else { 0.0 })));
        assert_eq!(d.threshold, None);
    }

    #[test]
    fn two_high_periods_and_the_destroy_left_out() {
        let mut r = rows(300, |s| {
            Some(match s {
                20..80 | 150..210 => 36.0,
                _ => 4.0,
            })
        });
        for row in &mut r[280..] {
            row.decision = "destroy".into();
            row.in_flight = Some(40.0);
        }
        let d = detect(&r);
        assert_eq!(highs(&d), [(20, 80), (150, 210)]);
        assert_eq!(d.periods.last().unwrap().end, t(280));
    }

    #[test]
    fn an_empty_series_has_no_period() {
        let d = detect(&[]);
        assert!(d.periods.is_empty());
    }
}
