//! The two inputs: the conductor's per-tick time series of one group
//! (`<state_path>/timeseries/<group>.csv`, read by the conductor's own reader) and the
//! load test's phase CSV (`autoscaler-loadtest --csv`), on one time axis: seconds since the
//! first phase started (or since the first row, without phases).

use std::path::Path;

use autoscaler_core::timeseries::{read_rows, Row};
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

/// Everything the graphs and the summary need.
#[derive(Debug, Clone)]
pub struct Run {
    pub rows: Vec<Row>,
    pub phases: Vec<Phase>,
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
        let origin = phases
            .first()
            .map(|p| p.start)
            .or(rows.first().map(|r| r.time))
            .ok_or_else(|| DataError::Empty(timeseries.display().to_string()))?;
        if rows.is_empty() {
            return Err(DataError::Empty(timeseries.display().to_string()));
        }
        Ok(Run {
            rows,
            phases,
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
