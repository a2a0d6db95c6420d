//! Plays a scenario: one ab run per phase, in order, with a timestamped line at the start
//! and the end of every phase, one CSV row per phase, and the sum of ab's reports.
//!
//! The phase CSV is a contract (the graph tool shades the high-load periods from it):
//! `phase,label,kind,clients,seconds,start,end,complete,failed,failed_connect,
//! failed_receive,failed_length,failed_exceptions,non_2xx,mean_ms`, times RFC 3339 UTC with
//! milliseconds, `kind` `high` or `low`.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ab::{self, AbError, AbReport};
use autoscaler_core::scenario::{PhaseRecord, Scenario};

/// What a run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub ab: PathBuf,
    /// Where the phase CSV goes, if anywhere.
    pub csv: Option<PathBuf>,
}

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("phase {phase}: {source}")]
    Ab { phase: usize, source: AbError },
    #[error("cannot write {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("cannot write the log: {0}")]
    Log(#[from] io::Error),
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Plays `scenario`, writing its log lines to `log`; returns the sum of ab's reports.
pub fn play(
    scenario: &Scenario,
    options: &Options,
    log: &mut dyn Write,
) -> Result<AbReport, RunError> {
    let mut csv = match &options.csv {
        Some(path) => Some(open_csv(path)?),
        None => None,
    };
    let n = scenario.phases.len();
    let mut total = AbReport::default();
    for (i, phase) in scenario.phases.iter().enumerate() {
        let number = i + 1;
        let label = if phase.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", phase.label)
        };
        let start = Utc::now();
        writeln!(
            log,
            "{} phase {number}/{n} start: {} clients for {} s, {} load{label}",
            stamp(start),
            phase.clients,
            phase.seconds,
            phase.kind
        )?;
        log.flush()?;
        let report = if phase.clients == 0 {
            std::thread::sleep(Duration::from_secs(u64::from(phase.seconds)));
            AbReport::default()
        } else {
            ab::run(&options.ab, &options.url, phase.seconds, phase.clients).map_err(|source| {
                RunError::Ab {
                    phase: number,
                    source,
                }
            })?
        };
        let end = Utc::now();
        let mean = report
            .mean_ms
            .map_or_else(String::new, |m| format!(", mean {m:.1} ms"));
        writeln!(
            log,
            "{} phase {number}/{n} end: {} clients, {} load{label}: {} complete, {} failed, \
             {} non-2xx{mean}",
            stamp(end),
            phase.clients,
            phase.kind,
            report.complete,
            report.failed,
            report.non_2xx
        )?;
        log.flush()?;
        if let (Some(writer), Some(path)) = (csv.as_mut(), options.csv.as_ref()) {
            let row = PhaseRecord {
                phase: number,
                label: phase.label.clone(),
                kind: phase.kind.as_str().to_owned(),
                clients: phase.clients,
                seconds: phase.seconds,
                start,
                end,
                complete: report.complete,
                failed: report.failed,
                failed_connect: report.failed_connect,
                failed_receive: report.failed_receive,
                failed_length: report.failed_length,
                failed_exceptions: report.failed_exceptions,
                non_2xx: report.non_2xx,
                mean_ms: report.mean_ms,
            };
            let written = writer.serialize(&row).and_then(|_| Ok(writer.flush()?));
            written.map_err(|source| RunError::Csv {
                path: path.clone(),
                source,
            })?;
        }
        total.add(&report);
    }
    Ok(total)
}

/// Writes `phases` as the phase CSV at `path`.
pub fn write_phases(path: &Path, phases: &[PhaseRecord]) -> Result<(), RunError> {
    let mut writer = open_csv(path)?;
    let written: Result<(), csv::Error> = phases
        .iter()
        .try_for_each(|p| writer.serialize(p))
        .and_then(|_| Ok(writer.flush()?));
    written.map_err(|source| RunError::Csv {
        path: path.to_owned(),
        source,
    })
}

fn open_csv(path: &Path) -> Result<csv::Writer<std::fs::File>, RunError> {
    csv::Writer::from_path(path).map_err(|source| RunError::Csv {
        path: path.to_owned(),
        source,
    })
}

/// The closing summary: the sums, failures by kind.
pub fn summary(total: &AbReport) -> String {
    format!(
        "total: {} complete; {} failed (connect {}, receive {}, length {}, exceptions {}); \
         {} non-2xx",
        total.complete,
        total.failed,
        total.failed_connect,
        total.failed_receive,
        total.failed_length,
        total.failed_exceptions,
        total.non_2xx
    )
}
