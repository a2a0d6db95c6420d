//! The splitter agent's per-second measurement, as `autoscaler-agent` reports it: every
//! request whose log line ends in the interval (a request counts when it *ends*, errors
//! included), their mean and their exact nearest-rank 95th percentile.

use chrono::{DateTime, Utc};

use crate::policy::Observation;

/// One interval's requests so far.
#[derive(Debug, Default, Clone)]
pub struct IntervalStats {
    requests: u64,
    errors: u64,
    total: f64,
    samples: Vec<f64>,
}

impl IntervalStats {
    /// A request ended, after `response_time` seconds; `ok` false for a failed one.
    pub fn record(&mut self, response_time: f64, ok: bool) {
        self.requests += 1;
        if !ok {
            self.errors += 1;
        }
        self.total += response_time;
        self.samples.push(response_time);
    }

    /// Failed requests of the interval so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The interval's observation, ending at `end`; starts the next interval.
    pub fn take(&mut self, end: DateTime<Utc>, interval: f64, serving: u32) -> Observation {
        let requests = self.requests;
        let mean = if requests > 0 {
            self.total / requests as f64
        } else {
            0.0
        };
        let p95 = nearest_rank(&mut self.samples, 0.95);
        self.requests = 0;
        self.errors = 0;
        self.total = 0.0;
        self.samples.clear();
        Observation {
            end,
            interval,
            requests,
            mean,
            p95,
            serving,
        }
    }
}

/// The nearest-rank percentile `q` of `samples` (reordered); 0 without samples.
fn nearest_rank(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    *samples.select_nth_unstable_by(rank - 1, f64::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_nearest_rank_p95_then_a_fresh_interval() {
        let mut stats = IntervalStats::default();
        for i in 1..=20 {
            stats.record(f64::from(i) / 100.0, i != 7);
        }
        assert_eq!(stats.errors(), 1);
        let end = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let obs = stats.take(end, 1.0, 3);
        assert_eq!(obs.requests, 20);
        assert!((obs.mean - 0.105).abs() < 1e-12);
        assert_eq!(obs.p95, 0.19, "rank ceil(0.95 x 20) = 19");
        assert_eq!(obs.serving, 3);
        let empty = stats.take(end, 1.0, 3);
        assert_eq!((empty.requests, empty.mean, empty.p95), (0, 0.0, 0.0));
    }
}
