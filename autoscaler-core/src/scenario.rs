//! Scenario files: one load phase a line, `<seconds> <clients> [label]`, played in order.
//!
//! ```text
//! # the seed's alternation: low, a burst shorter than 5 s, low, high, low
//! 20 4  low
//! 3  60 burst
//! 20 4  low
//! 60 36 high
//! 60 4  low
//! ```
//!
//! `#` starts a comment; blank lines are ignored. Seconds and clients are whole numbers
//! (0 clients: a pause with no load). The label is free text for the report; the phase's
//! *kind*, high or low load, is the label when it is `high` or `low`, and otherwise follows
//! from the clients: high when above the midpoint of the scenario's fewest and most
//! clients. Pure: [`Scenario::parse`] reads text, [`Scenario::load`] a file.
//!
//! One format, two players: `autoscaler-loadtest` plays it with ab against a real site,
//! the simulator (`sim`) plays it as closed-loop clients, so the same file drives both.
//! Both record what they played in one *phase CSV* ([`PhaseRecord`]), which the graph
//! tool reads.

use std::{fmt, path::Path};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest phase accepted: a day. Anything longer is a typo.
const MAX_SECONDS: u32 = 24 * 60 * 60;
/// Most clients in one phase (ab's own limit is 20,000).
const MAX_CLIENTS: u32 = 20_000;

/// High or low load, as the graphs shade it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    High,
    Low,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::High => "high",
            Kind::Low => "low",
        }
    }
}

impl Kind {
    /// The kind of each phase given as `(clients, label)`: the label when it is `high` or
    /// `low` (any case), otherwise high when the clients are above the midpoint of the
    /// fewest and most clients of all the phases. The one rule for scenario files and for
    /// the phases of a load script's log (`autoscaler-loadtest phases-from`).
    pub fn of_phases<'a>(phases: impl Iterator<Item = (u32, &'a str)> + Clone) -> Vec<Kind> {
        let fewest = phases.clone().map(|p| p.0).min().unwrap_or(0);
        let most = phases.clone().map(|p| p.0).max().unwrap_or(0);
        let midpoint = (f64::from(fewest) + f64::from(most)) / 2.0;
        phases
            .map(
                |(clients, label)| match label.to_ascii_lowercase().as_str() {
                    "high" => Kind::High,
                    "low" => Kind::Low,
                    _ if f64::from(clients) > midpoint => Kind::High,
                    _ => Kind::Low,
                },
            )
            .collect()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One phase of load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub seconds: u32,
    pub clients: u32,
    /// As written, or empty.
    pub label: String,
    pub kind: Kind,
}

/// One played phase, a row of the phase CSV (`autoscaler-loadtest --csv`,
/// `autoscaler-sim run --phases`; read by `autoscaler-graphs`). Field order is column
/// order: `phase,label,kind,clients,seconds,start,end,complete,failed,failed_connect,
/// failed_receive,failed_length,failed_exceptions,non_2xx,mean_ms`; times RFC 3339, UTC,
/// milliseconds. The counts are ab's (the simulator's own for a simulated phase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// 1-based.
    pub phase: usize,
    pub label: String,
    /// `high` or `low` ([`Kind`]).
    pub kind: String,
    /// Concurrent clients (for a simulated open-loop phase, requests a second, rounded).
    pub clients: u32,
    /// The phase's planned length.
    pub seconds: u32,
    #[serde(with = "crate::time_format::rfc3339_millis")]
    pub start: DateTime<Utc>,
    #[serde(with = "crate::time_format::rfc3339_millis")]
    pub end: DateTime<Utc>,
    pub complete: u64,
    /// All failed requests; the kinds follow (ab's words).
    pub failed: u64,
    pub failed_connect: u64,
    pub failed_receive: u64,
    pub failed_length: u64,
    pub failed_exceptions: u64,
    /// Answers outside 2xx (ab counts them apart from `failed`).
    pub non_2xx: u64,
    /// ab's mean time per request, milliseconds.
    pub mean_ms: Option<f64>,
}

impl PhaseRecord {
    pub fn is_high(&self) -> bool {
        self.kind == Kind::High.as_str()
    }
}

/// The phases of a scenario, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub phases: Vec<Phase>,
}

/// Why a scenario cannot be played; names the source and the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScenarioError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{source_name}:{line}: {problem}")]
    Line {
        source_name: String,
        line: usize,
        problem: String,
    },
    #[error("{source_name}: no phase (one a line: <seconds> <clients> [label])")]
    Empty { source_name: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    /// Parses `text`, naming `source_name` in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut raw = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |problem: String| ScenarioError::Line {
                source_name: source_name.to_owned(),
                line: line_no,
                problem,
            };
            let mut fields = content.split_whitespace();
            let seconds = whole(fields.next(), "seconds", 1, MAX_SECONDS).map_err(bad)?;
            let clients = whole(fields.next(), "clients", 0, MAX_CLIENTS).map_err(bad)?;
            let label = fields.collect::<Vec<_>>().join(" ");
            raw.push((seconds, clients, label));
        }
        if raw.is_empty() {
            return Err(ScenarioError::Empty {
                source_name: source_name.to_owned(),
            });
        }
        let kinds = Kind::of_phases(
            raw.iter()
                .map(|(_, clients, label)| (*clients, label.as_str())),
        );
        let phases = raw
            .into_iter()
            .zip(kinds)
            .map(|((seconds, clients, label), kind)| Phase {
                seconds,
                clients,
                label,
                kind,
            })
            .collect();
        Ok(Scenario { phases })
    }

    /// Seconds the whole scenario lasts.
    pub fn seconds(&self) -> u64 {
        self.phases.iter().map(|p| u64::from(p.seconds)).sum()
    }
}

fn whole(field: Option<&str>, what: &str, min: u32, max: u32) -> Result<u32, String> {
    let text =
        field.ok_or_else(|| format!("missing {what}: expected <seconds> <clients> [label]"))?;
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} {text:?}: expected a whole number from {min} to {max}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_labels_comments_and_kinds() {
        let s = Scenario::parse(
            "s.txt",
            "# alternation\n\n20 4 low\n3 60 burst # short\n60 36\n10 0\n5 30 high\n",
        )
        .unwrap();
        let got: Vec<(u32, u32, &str, Kind)> = s
            .phases
            .iter()
            .map(|p| (p.seconds, p.clients, p.label.as_str(), p.kind))
            .collect();
        assert_eq!(
            got,
            [
                (20, 4, "low", Kind::Low),
                (3, 60, "burst", Kind::High),
                (60, 36, "", Kind::High),
                (10, 0, "", Kind::Low),
                (5, 30, "high", Kind::High),
            ]
        );
        assert_eq!(s.seconds(), 98);
    }

    #[test]
    fn an_explicit_label_wins_over_the_clients() {
        let s = Scenario::parse("s", "10 100 low\n10 1 HIGH\n").unwrap();
        assert_eq!(s.phases[0].kind, Kind::Low);
        assert_eq!(s.phases[1].kind, Kind::High);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                "10\n",
                "s:1: missing clients: expected <seconds> <clients> [label]",
            ),
            (
                "10 4\nx 4\n",
                "s:2: seconds \"x\": expected a whole number from 1 to 86400",
            ),
            (
                "0 4\n",
                "s:1: seconds \"0\": expected a whole number from 1 to 86400",
            ),
            (
                "5 -1\n",
                "s:1: clients \"-1\": expected a whole number from 0 to 20000",
            ),
            (
                "5 20001\n",
                "s:1: clients \"20001\": expected a whole number from 0 to 20000",
            ),
            (
                "# nothing\n\n",
                "s: no phase (one a line: <seconds> <clients> [label])",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                Scenario::parse("s", text).unwrap_err().to_string(),
                message,
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "txt") {
                continue; // sim/ holds the simulator's suite, tested with it
            }
            let s = Scenario::load(&path).unwrap();
            assert!(
                s.phases.iter().any(|p| p.kind == Kind::High),
                "{}",
                path.display()
            );
            assert!(
                s.phases.iter().any(|p| p.kind == Kind::Low),
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(seen >= 3, "{seen} scenarios in {}", dir.display());
    }
}
