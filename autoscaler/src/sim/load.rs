//! The load a run plays: closed-loop clients like ab (`-c N`, from the load tests'
//! scenario files) or open-loop Poisson arrivals (rate over time, from a CSV trace).
//!
//! Both become a list of [`LoadPhase`]s: a constant level (clients, or requests a
//! second) over a span of seconds. The trace format, one phase a row:
//!
//! ```text
//! seconds,rate,label
//! 60,100,low
//! 120,900,overload
//! ```
//!
//! A header line `seconds,rate` or `seconds,rate,label` comes first; `#` starts a
//! comment; `seconds` is a whole number from 1 to 86400, `rate` a number of requests a
//! second from 0 to 1,000,000. The kind (high or low) follows the scenario files' rule.

use std::path::Path;

use crate::scenario::{Kind, Scenario};

/// Closed loop (clients that wait for their answer) or open loop (arrivals regardless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// `level` is the number of clients, each sending its next request as soon as its
    /// previous one is answered (ab's `-c`, no think time).
    Closed,
    /// `level` is the Poisson arrival rate, requests per second.
    Open,
}

/// One span of constant load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPhase {
    /// Seconds since the run began.
    pub start: f64,
    pub end: f64,
    pub level: f64,
    pub label: String,
    pub kind: Kind,
}

impl LoadPhase {
    pub fn seconds(&self) -> f64 {
        self.end - self.start
    }
}

/// What a run plays.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub kind: LoadKind,
    pub phases: Vec<LoadPhase>,
}

/// Why a trace cannot be played; names the source and the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{source_name}:{line}: {problem}")]
    Line {
        source_name: String,
        line: usize,
        problem: String,
    },
    #[error("{source_name}: no phase (a header `seconds,rate[,label]`, then one phase a row)")]
    Empty { source_name: String },
}

const MAX_SECONDS: u32 = 24 * 60 * 60;
const MAX_RATE: f64 = 1_000_000.0;

impl Load {
    /// Closed-loop clients playing `scenario`'s phases in order.
    pub fn closed(scenario: &Scenario) -> Load {
        let mut start = 0.0;
        let phases = scenario
            .phases
            .iter()
            .map(|p| {
                let end = start + f64::from(p.seconds);
                let phase = LoadPhase {
                    start,
                    end,
                    level: f64::from(p.clients),
                    label: p.label.clone(),
                    kind: p.kind,
                };
                start = end;
                phase
            })
            .collect();
        Load {
            kind: LoadKind::Closed,
            phases,
        }
    }

    /// Reads an open-loop trace file.
    pub fn load_trace(path: &Path) -> Result<Load, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Load::parse_trace(&path.display().to_string(), &text)
    }

    /// Parses an open-loop trace, naming `source_name` in errors.
    pub fn parse_trace(source_name: &str, text: &str) -> Result<Load, TraceError> {
        let mut header = false;
        let mut raw: Vec<(u32, f64, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |problem: String| TraceError::Line {
                source_name: source_name.to_owned(),
                line: i + 1,
                problem,
            };
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            if !header {
                if fields != ["seconds", "rate"] && fields != ["seconds", "rate", "label"] {
                    return Err(bad(format!(
                        "expected the header `seconds,rate` or `seconds,rate,label`, found {content:?}"
                    )));
                }
                header = true;
                continue;
            }
            if fields.len() < 2 || fields.len() > 3 {
                return Err(bad(format!(
                    "expected seconds,rate[,label], found {} fields",
                    fields.len()
                )));
            }
            let seconds = fields[0]
                .parse::<u32>()
                .ok()
                .filter(|s| (1..=MAX_SECONDS).contains(s))
                .ok_or_else(|| {
                    bad(format!(
                        "seconds {:?}: expected a whole number from 1 to {MAX_SECONDS}",
                        fields[0]
                    ))
                })?;
            let rate = fields[1]
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && (0.0..=MAX_RATE).contains(r))
                .ok_or_else(|| {
                    bad(format!(
                        "rate {:?}: expected requests a second from 0 to {MAX_RATE}",
                        fields[1]
                    ))
                })?;
            raw.push((seconds, rate, fields.get(2).unwrap_or(&"").to_string()));
        }
        if raw.is_empty() {
            return Err(TraceError::Empty {
                source_name: source_name.to_owned(),
            });
        }
        let fewest = raw.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let most = raw.iter().map(|p| p.1).fold(0.0, f64::max);
        let midpoint = (fewest + most) / 2.0;
        let mut start = 0.0;
        let phases = raw
            .into_iter()
            .map(|(seconds, rate, label)| {
                let kind = match label.to_ascii_lowercase().as_str() {
                    "high" => Kind::High,
                    "low" => Kind::Low,
                    _ if rate > midpoint => Kind::High,
                    _ => Kind::Low,
                };
                let end = start + f64::from(seconds);
                let phase = LoadPhase {
                    start,
                    end,
                    level: rate,
                    label,
                    kind,
                };
                start = end;
                phase
            })
            .collect();
        Ok(Load {
            kind: LoadKind::Open,
            phases,
        })
    }

    /// Seconds the load lasts.
    pub fn seconds(&self) -> f64 {
        self.phases.last().map_or(0.0, |p| p.end)
    }

    /// The phase running at `t`, if any.
    pub fn phase_at(&self, t: f64) -> Option<usize> {
        self.phases.iter().position(|p| p.start <= t && t < p.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_becomes_phases() {
        let load = Load::parse_trace(
            "t.csv",
            "# overload\nseconds,rate,label\n60,100,low\n\n120, 900 ,overload # beyond max\n30,0\n",
        )
        .unwrap();
        assert_eq!(load.kind, LoadKind::Open);
        let got: Vec<(f64, f64, f64, Kind)> = load
            .phases
            .iter()
            .map(|p| (p.start, p.end, p.level, p.kind))
            .collect();
        assert_eq!(
            got,
            [
                (0.0, 60.0, 100.0, Kind::Low),
                (60.0, 180.0, 900.0, Kind::High),
                (180.0, 210.0, 0.0, Kind::Low)
            ]
        );
        assert_eq!(load.seconds(), 210.0);
        assert_eq!(load.phase_at(60.0), Some(1));
        assert_eq!(load.phase_at(210.0), None);
    }

    #[test]
    fn trace_errors_name_the_file_and_line() {
        let cases = [
            (
                "60,100\n",
                "t:1: expected the header `seconds,rate` or `seconds,rate,label`, found \"60,100\"",
            ),
            (
                "seconds,rate\n0,5\n",
                "t:2: seconds \"0\": expected a whole number from 1 to 86400",
            ),
            (
                "seconds,rate\n5,-1\n",
                "t:2: rate \"-1\": expected requests a second from 0 to 1000000",
            ),
            (
                "seconds,rate\n5,inf\n",
                "t:2: rate \"inf\": expected requests a second from 0 to 1000000",
            ),
            (
                "seconds,rate\n5\n",
                "t:2: expected seconds,rate[,label], found 1 fields",
            ),
            (
                "seconds,rate\n",
                "t: no phase (a header `seconds,rate[,label]`, then one phase a row)",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                Load::parse_trace("t", text).unwrap_err().to_string(),
                message,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_scenario_becomes_closed_loop_phases() {
        let s = Scenario::parse("s", "20 4 low\n3 60 burst\n").unwrap();
        let load = Load::closed(&s);
        assert_eq!(load.kind, LoadKind::Closed);
        assert_eq!(load.phases[1].start, 20.0);
        assert_eq!(load.phases[1].level, 60.0);
        assert_eq!(load.seconds(), 23.0);
    }
}
