//! Per-interval statistics of the splitter's request log: feeds on parsed lines, and once an
//! interval (a quarter of a second) hands out a [`Metrics`] payload for the whole site and
//! for each member.
//!
//! Pure: no I/O and no clock; the caller passes the time to [`Aggregator::take`]. A request
//! counts in the interval in which its log line arrived (the stamp is not read): mod_jk
//! writes the line when the request ends, so arrival is at most one poll late.
//!
//! Percentiles are exact, by nearest rank over the interval's sorted samples: an interval
//! holds at most a few thousand requests here (about 80 req/s per VM), so sorting costs less than
//! a sketch's error. Memory is 8 bytes per request for the site plus 8 per request with a
//! known member, kept between intervals for reuse.

use std::{collections::BTreeMap, time::Duration};

use autoscaler_messaging::payload::{MemberStats, Metrics, Stats};
use chrono::{DateTime, Utc};

use crate::request_log::{Line, RequestRecord};

/// Collects one interval of the log at a time.
#[derive(Debug)]
pub(crate) struct Aggregator {
    group: String,
    vm_id: String,
    /// Start of the interval being collected: creation or the last `take`.
    start: DateTime<Utc>,
    site: Samples,
    /// By member name; a BTreeMap so `take` lists members sorted without a sort. Members
    /// idle for a whole interval are removed at `take`, so the map follows the pool.
    members: BTreeMap<String, Samples>,
    malformed: u64,
    messages: u64,
}

/// The response times of one interval, for the site or one member.
#[derive(Debug, Default)]
struct Samples {
    /// Nanoseconds, unsorted until `stats`. Integers sort faster than floats and sum
    /// exactly.
    nanos: Vec<u64>,
    errors: u64,
}

impl Aggregator {
    /// Starts the first interval at `now`.
    pub(crate) fn new(
        group: impl Into<String>,
        vm_id: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Aggregator {
            group: group.into(),
            vm_id: vm_id.into(),
            start: now,
            site: Samples::default(),
            members: BTreeMap::new(),
            malformed: 0,
            messages: 0,
        }
    }

    /// Counts one classified log line.
    pub(crate) fn record_line(&mut self, line: &Line<'_>) {
        match line {
            Line::Request(request) => self.record(request),
            Line::Message => self.messages += 1,
            Line::Malformed(_) => self.malformed += 1,
        }
    }

    /// Counts one request: always in the site totals, and in its member's when known.
    pub(crate) fn record(&mut self, request: &RequestRecord<'_>) {
        // A status outside 200-399 is an error; no status (the seed's format) is not.
        let error = request
            .status
            .is_some_and(|status| !(200..=399).contains(&status));
        self.site.push(request.duration, error);
        if let Some(member) = request.member {
            // Look up by &str first: allocates a name only for a member new in the map.
            match self.members.get_mut(member) {
                Some(samples) => samples.push(request.duration, error),
                None => {
                    let mut samples = Samples::default();
                    samples.push(request.duration, error);
                    self.members.insert(member.to_owned(), samples);
                }
            }
        }
    }

    /// Counts `lines` malformed lines, e.g. lines the follower cut for being too long.
    pub(crate) fn record_malformed(&mut self, lines: u64) {
        self.malformed += lines;
    }

    /// Counts one of mod_jk's own messages.
    pub(crate) fn record_message(&mut self) {
        self.messages += 1;
    }

    /// Ends the interval at `now`: returns its metrics (every `busy` is `None`, for the
    /// caller to fill from jkstatus) and starts the next interval at `now`. A `now` before
    /// the interval's start (the wall clock stepped back) gives an interval of 0 s.
    pub(crate) fn take(&mut self, now: DateTime<Utc>) -> Metrics {
        let interval = (now - self.start)
            .to_std()
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        self.members.retain(|_, samples| !samples.nanos.is_empty());
        let members = self
            .members
            .iter_mut()
            .map(|(name, samples)| MemberStats {
                member: name.clone(),
                stats: samples.take_stats(),
                busy: None,
            })
            .collect();
        let metrics = Metrics {
            group: self.group.clone(),
            vm_id: self.vm_id.clone(),
            start: self.start,
            interval,
            site: self.site.take_stats(),
            members,
            malformed_lines: std::mem::take(&mut self.malformed),
            modjk_messages: std::mem::take(&mut self.messages),
        };
        self.start = now;
        metrics
    }
}

impl Samples {
    fn push(&mut self, duration: Duration, error: bool) {
        // u64 nanoseconds cover 584 years; the parser allows at most 10^12 s, so saturate.
        self.nanos
            .push(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        self.errors += u64::from(error);
    }

    /// The statistics of the samples so far, which are then cleared (capacity is kept).
    fn take_stats(&mut self) -> Stats {
        let n = self.nanos.len();
        if n == 0 {
            self.errors = 0;
            return Stats::default();
        }
        self.nanos.sort_unstable();
        let sum: u128 = self.nanos.iter().map(|&v| u128::from(v)).sum();
        let seconds = |nanos: u64| nanos as f64 / 1e9;
        let stats = Stats {
            requests: n as u64,
            errors: std::mem::take(&mut self.errors),
            mean: sum as f64 / n as f64 / 1e9,
            p50: seconds(nearest_rank(&self.nanos, 50)),
            p95: seconds(nearest_rank(&self.nanos, 95)),
            p99: seconds(nearest_rank(&self.nanos, 99)),
            max: seconds(self.nanos[n - 1]),
        };
        self.nanos.clear();
        stats
    }
}

/// The `percent`th percentile of non-empty `sorted` by nearest rank: the smallest sample
/// with at least `percent`% of the samples at or below it, i.e. index ceil(p/100 * n) - 1.
fn nearest_rank(sorted: &[u64], percent: usize) -> u64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        format!("2026-11-27T19:27:{second:02}Z").parse().unwrap()
    }

    fn request(member: Option<&str>, millis: u64, status: Option<u16>) -> RequestRecord<'_> {
        RequestRecord {
            worker: "loadbalancer",
            member,
            vhost: "127.0.0.1",
            duration: Duration::from_millis(millis),
            status,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn known_samples_give_known_percentiles() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        // 1..=100 ms on worker1: nearest rank gives p50 = 50 ms, p95 = 95, p99 = 99.
        for millis in (1..=100).rev() {
            agg.record(&request(Some("worker1"), millis, Some(200)));
        }
        let m = agg.take(at(11));
        assert_eq!((m.group.as_str(), m.vm_id.as_str()), ("shop", "vm-0"));
        assert_eq!((m.start, m.interval), (at(10), 1.0));
        let s = m.members[0].stats;
        assert_eq!(m.members[0].member, "worker1");
        assert_eq!((s.requests, s.errors), (100, 0));
        assert!(close(s.mean, 0.0505), "{s:?}");
        assert!(close(s.p50, 0.050) && close(s.p95, 0.095), "{s:?}");
        assert!(close(s.p99, 0.099) && close(s.max, 0.100), "{s:?}");
        assert_eq!(m.site, s);
        assert_eq!(m.members[0].busy, None);
    }

    #[test]
    fn small_samples_use_nearest_rank() {
        assert_eq!(nearest_rank(&[7], 50), 7);
        assert_eq!(nearest_rank(&[7], 99), 7);
        assert_eq!(nearest_rank(&[1, 2], 50), 1);
        assert_eq!(nearest_rank(&[1, 2], 51), 2);
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 95), 4);
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 0), 1);
    }

    #[test]
    fn empty_interval_is_all_zeros() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        let m = agg.take(at(11));
        assert_eq!(m.site, Stats::default());
        assert!(m.members.is_empty());
        assert_eq!((m.malformed_lines, m.modjk_messages), (0, 0));
    }

    #[test]
    fn unknown_member_counts_for_the_site_only() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        agg.record(&request(None, 300, None));
        agg.record(&request(Some("worker2"), 100, Some(200)));
        let m = agg.take(at(11));
        assert_eq!(m.site.requests, 2);
        assert!(close(m.site.mean, 0.2) && close(m.site.max, 0.3));
        assert_eq!(m.members.len(), 1);
        assert_eq!(m.members[0].member, "worker2");
        assert_eq!(m.members[0].stats.requests, 1);
        assert!(close(m.members[0].stats.max, 0.1));
    }

    #[test]
    fn errors_are_statuses_outside_200_to_399() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        for status in [
            None,
            Some(200),
            Some(302),
            Some(399),
            Some(404),
            Some(503),
            Some(199),
        ] {
            agg.record(&request(Some("worker1"), 10, status));
        }
        let m = agg.take(at(11));
        assert_eq!((m.site.requests, m.site.errors), (7, 3));
        assert_eq!(m.members[0].stats.errors, 3);
    }

    #[test]
    fn intervals_are_independent_and_idle_members_leave() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        agg.record(&request(Some("worker2"), 10, Some(500)));
        agg.record(&request(Some("worker1"), 20, Some(200)));
        agg.record_malformed(2);
        agg.record_message();
        let first = agg.take(at(11));
        let names: Vec<_> = first.members.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["worker1", "worker2"]);
        assert_eq!((first.malformed_lines, first.modjk_messages), (2, 1));

        agg.record(&request(Some("worker1"), 40, Some(200)));
        // The agent ticked late: the interval says so.
        let second = agg.take(at(13));
        assert_eq!((second.start, second.interval), (at(11), 2.0));
        assert_eq!(second.members.len(), 1);
        assert_eq!((second.site.requests, second.site.errors), (1, 0));
        assert!(close(second.site.p50, 0.04));
        assert_eq!((second.malformed_lines, second.modjk_messages), (0, 0));
    }

    #[test]
    fn clock_stepping_back_gives_a_zero_interval() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        assert_eq!(agg.take(at(9)).interval, 0.0);
    }

    #[test]
    fn parsed_lines_are_routed_by_kind() {
        let mut agg = Aggregator::new("shop", "vm-0", at(10));
        for line in [
            "[Fri Nov 27 19:27:10.185 2026] loadbalancer worker1 127.0.0.1 0.051356 200",
            "[Fri Nov 27 19:27:10 2026]loadbalancer 127.0.0.1 0.080683",
            "[Fri Nov 27 19:27:10.185 2026] [12345:140234] [info] init_jk::mod_jk.c (3586): x",
            "garbage",
        ] {
            agg.record_line(&crate::request_log::parse(line));
        }
        let m = agg.take(at(11));
        assert_eq!((m.site.requests, m.members.len()), (2, 1));
        assert!(close(m.site.max, 0.080683) && close(m.members[0].stats.max, 0.051356));
        assert_eq!((m.malformed_lines, m.modjk_messages), (1, 1));
    }
}
