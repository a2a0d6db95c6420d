//! The two inputs: the conductor's per-tick time series of one group
//! (`<state_path>/timeseries/<group>.csv`, read by the conductor's own reader) and the
//! load test's phase CSV (`autoscaler-loadtest --csv`, or `autoscaler-loadtest phases-from`
//! a script's log), on one time axis: seconds since the first phase started. Without a
//! phase file the phases are the high- and low-load periods found from the measured load
//! (`load.rs`), and the axis starts at the first row.

use std::path::Path;

use autoscaler_core::{
    scenario::Kind,
    timeseries::{read_rows, Row},
};
use chrono::{DateTime, Utc};

/// One load-test phase, as `autoscaler-loadtest` (or the simulator) records it.
pub use autoscaler_core::scenario::PhaseRecord as Phase;

/// Why the inputs cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    TimeSeries(#[from] autoscaler_core::timeseries::ReadError),
    #[error("cannot read {path}: {source}")]
    Phases { path: String, source: csv::Error },
    #[error("{0}: no row to draw")]
    Empty(String),
}

/// Where a run's phases come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Phases {
    /// A phase file: the load test's own record.
    LoadTest,
    /// No phase file: found from the measured load; the threshold in requests in flight,
    /// `None` when the run had one level of load.
    Measured { threshold: Option<f64> },
}

/// Everything the graphs and the summary need.
#[derive(Debug, Clone)]
pub struct Run {
    pub rows: Vec<Row>,
    pub phases: Vec<Phase>,
    pub source: Phases,
    /// Time zero of the x axis.
    pub origin: DateTime<Utc>,
}

impl Run {
    pub fn load(timeseries: &Path, phases: Option<&Path>) -> Result<Run, DataError> {
        let mut rows = read_rows(timeseries)?;
        let phases = match phases {
            Some(path) => {
                let mut reader =
                    csv::Reader::from_path(path).map_err(|source| DataError::Phases {
                        path: path.display().to_string(),
                        source,
                    })?;
                reader
                    .deserialize()
                    .collect::<Result<Vec<Phase>, _>>()
                    .map_err(|source| DataError::Phases {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            None => Vec::new(),
        };
        // The load test's window (with a little before and after) when there is one: the
        // time series of a long-lived conductor holds much more.
        if let (Some(first), Some(last)) = (phases.first(), phases.last()) {
            let from = first.start - chrono::Duration::seconds(10);
            let to = last.end + chrono::Duration::seconds(30);
            rows.retain(|r| r.time >= from && r.time <= to);
        }
        if rows.is_empty() {
            return Err(DataError::Empty(timeseries.display().to_string()));
        }
        let (phases, source) = if phases.is_empty() {
            let detection = crate::load::detect(&rows);
            let phases = measured_phases(&detection);
            (
                phases,
                Phases::Measured {
                    threshold: detection.threshold,
                },
            )
        } else {
            (phases, Phases::LoadTest)
        };
        let origin = match source {
            Phases::LoadTest => phases[0].start,
            Phases::Measured { .. } => rows[0].time,
        };
        Ok(Run {
            rows,
            phases,
            source,
            origin,
        })
    }

    /// Seconds since the origin.
    pub fn x(&self, t: DateTime<Utc>) -> f64 {
        (t - self.origin).num_milliseconds() as f64 / 1000.0
    }

    /// The template's target response time, seconds.
    pub fn target(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.target_response_time)
    }
}

/// The periods found from the measured load as phases: kind `high` or `low`, label
/// `measured`, the clients the mean requests in flight (rounded), no request counts.
pub fn measured_phases(detection: &crate::load::Detection) -> Vec<Phase> {
    detection
        .periods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kind = if p.high { Kind::High } else { Kind::Low };
            Phase {
                phase: i + 1,
                label: "measured".into(),
                kind: kind.as_str().into(),
                clients: p.in_flight.round().clamp(0.0, f64::from(u32::MAX)) as u32,
                seconds: ((p.end - p.start).num_milliseconds().max(0) / 1000) as u32,
                start: p.start,
                end: p.end,
                complete: 0,
                failed: 0,
                failed_connect: 0,
                failed_receive: 0,
                failed_length: 0,
                failed_exceptions: 0,
                non_2xx: 0,
                mean_ms: None,
            }
        })
        .collect()
}
