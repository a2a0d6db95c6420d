//! The scenario suite (`tools/scenarios/`, see `tools/scenarios/sim/README`) and the
//! comparison table the bench command prints and writes as Markdown.
//!
//! Every scenario runs every policy on the same seeds; the figures are means over the
//! seeds. The site is the local images' web tier (4 threads a VM, 50 ms mean service
//! time, here lognormal with a CV of 0.5: 80 requests a second a VM), target 0.2 s, and
//! VMs that take requests about 30 s after they are asked for (lognormal, CV 0.1).

use std::path::Path;

use super::{
    distribution::Distribution,
    load::{Load, TraceError},
    peers::PolicyKind,
    score::{score, Score},
    world::{run, Fault, FaultKind, SimConfig},
};
use crate::scenario::{Scenario, ScenarioError};

/// One scenario of the suite.
#[derive(Debug, Clone)]
pub struct SuiteEntry {
    pub name: &'static str,
    /// One line for the table's legend.
    pub what: &'static str,
    /// Under the suite's folder: a scenario file (`.txt`, closed loop) or a trace (`.csv`,
    /// open loop).
    pub file: &'static str,
    pub max_vms: u32,
    pub faults: &'static [Fault],
}

/// The site every suite scenario runs on, `max_vms` aside.
pub fn suite_site(seed: u64, max_vms: u32) -> SimConfig {
    SimConfig {
        max_vms,
        service: Distribution::Lognormal {
            mean: 0.05,
            cv: 0.5,
        },
        ..SimConfig::local_images(seed)
    }
}

/// The suite, in table order.
pub const SUITE: &[SuiteEntry] = &[
    SuiteEntry {
        name: "seed-alternation",
        what: "the seed's load test: low and high alternate, a 3 s burst inside a low phase",
        file: "seed-alternation.txt",
        max_vms: 4,
        faults: &[],
    },
    SuiteEntry {
        name: "flash-crowd",
        what: "8 clients, then 140 at once for 3 minutes (9 VMs), then 8 again",
        file: "sim/flash-crowd.txt",
        max_vms: 10,
        faults: &[],
    },
    SuiteEntry {
        name: "diurnal-ramp",
        what: "a day compressed into 48 minutes: 6 to 120 clients and back, a step a minute",
        file: "sim/diurnal-ramp.txt",
        max_vms: 10,
        faults: &[],
    },
    SuiteEntry {
        name: "repeated-bursts",
        what: "4 clients with bursts of 60 lasting 1 to 4 s every 20 s, for 5 minutes",
        file: "sim/repeated-bursts.txt",
        max_vms: 4,
        faults: &[],
    },
    SuiteEntry {
        name: "crash-under-load",
        what: "36 clients on 3 VMs; the oldest VM crashes 2 minutes in",
        file: "sim/crash-under-load.txt",
        max_vms: 4,
        faults: &[Fault {
            at: 150.0,
            kind: FaultKind::Crash,
        }],
    },
    SuiteEntry {
        name: "open-overload",
        what: "open loop: 100 req/s, then 500 req/s for 2 minutes (4 VMs do 320), then 100",
        file: "sim/open-overload.csv",
        max_vms: 4,
        faults: &[],
    },
    SuiteEntry {
        name: "quiet-night",
        what: "an evening's high load, then an hour of 2 clients, then the morning",
        file: "sim/quiet-night.txt",
        max_vms: 4,
        faults: &[],
    },
];

/// Why the suite cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// Reads a load file: `.csv` is an open-loop trace, anything else a scenario file.
pub fn load_file(path: &Path) -> Result<Load, SuiteError> {
    if path.extension().is_some_and(|e| e == "csv") {
        Ok(Load::load_trace(path)?)
    } else {
        Ok(Load::closed(&Scenario::load(path)?))
    }
}

impl SuiteEntry {
    pub fn config(&self, seed: u64) -> SimConfig {
        SimConfig {
            faults: self.faults.to_vec(),
            ..suite_site(seed, self.max_vms)
        }
    }
}

/// Means over the seeds of one scenario and policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub over_target: f64,
    pub over_avoidable: f64,
    pub vm_seconds: f64,
    pub actions: f64,
    pub burst_actions: f64,
    /// Mean seconds to settle over the settled steps of every seed.
    pub settle: Option<f64>,
    /// Steps that did not settle, over all seeds.
    pub unsettled: usize,
    pub steps: usize,
    pub failed: f64,
    pub bound_violations: u32,
}

impl Figures {
    fn of(scores: &[Score]) -> Figures {
        let n = scores.len().max(1) as f64;
        let mean = |f: fn(&Score) -> f64| scores.iter().map(f).sum::<f64>() / n;
        let settled: Vec<f64> = scores
            .iter()
            .flat_map(|s| s.settle.iter().flatten().copied())
            .collect();
        Figures {
            over_target: mean(|s| f64::from(s.over_target)),
            over_avoidable: mean(|s| f64::from(s.over_avoidable)),
            vm_seconds: mean(|s| s.vm_seconds),
            actions: mean(|s| f64::from(s.actions)),
            burst_actions: mean(|s| f64::from(s.burst_actions)),
            settle: (!settled.is_empty())
                .then(|| settled.iter().sum::<f64>() / settled.len() as f64),
            unsettled: scores.iter().map(|s| s.settle_summary().1).sum(),
            steps: scores.iter().map(|s| s.settle.len()).sum(),
            failed: mean(|s| s.failed as f64),
            bound_violations: scores.iter().map(|s| s.bound_violations).sum(),
        }
    }
}

/// One scenario's row group.
#[derive(Debug, Clone)]
pub struct ScenarioFigures {
    pub entry: SuiteEntry,
    pub by_policy: Vec<(PolicyKind, Figures)>,
}

impl ScenarioFigures {
    pub fn of(&self, kind: PolicyKind) -> Option<&Figures> {
        self.by_policy
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| f)
    }
}

/// Runs `entries` (files under `root`) with every policy of `policies` on `seeds`.
pub fn run_suite(
    root: &Path,
    entries: &[SuiteEntry],
    policies: &[PolicyKind],
    seeds: &[u64],
) -> Result<Vec<ScenarioFigures>, SuiteError> {
    let mut out = Vec::new();
    for entry in entries {
        let load = load_file(&root.join(entry.file))?;
        let mut by_policy = Vec::new();
        for &kind in policies {
            let scores: Vec<Score> = seeds
                .iter()
                .map(|&seed| {
                    let config = entry.config(seed);
                    let mut policy = kind.build(&config, &load);
                    let result = run(&config, &load, policy.as_mut());
                    score(&result, &load, &config)
                })
                .collect();
            by_policy.push((kind, Figures::of(&scores)));
        }
        out.push(ScenarioFigures {
            entry: entry.clone(),
            by_policy,
        });
    }
    Ok(out)
}

fn number(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The comparison as one Markdown table.
pub fn markdown(results: &[ScenarioFigures]) -> String {
    let mut out = String::from(
        "| scenario | policy | s over target | of them avoidable | VM-s | × oracle | actions | burst actions | settle s (unsettled/steps) | failed requests |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for scenario in results {
        let oracle = scenario.of(PolicyKind::Oracle).map(|f| f.vm_seconds);
        for (kind, f) in &scenario.by_policy {
            let ratio = oracle
                .filter(|o| *o > 0.0)
                .map_or("-".to_owned(), |o| format!("{:.2}", f.vm_seconds / o));
            let settle = f.settle.map_or("-".to_owned(), number);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {ratio} | {} | {} | {settle} ({}/{}) | {} |\n",
                scenario.entry.name,
                kind,
                number(f.over_target),
                number(f.over_avoidable),
                f.vm_seconds,
                number(f.actions),
                number(f.burst_actions),
                f.unsettled,
                f.steps,
                number(f.failed),
            ));
        }
    }
    out
}

/// Whether ours meets the goal in each scenario: fewer seconds over target than each
/// peer (or none when the peer has none) at no more VM-seconds, and within 1.15× of the
/// oracle's VM-seconds. One line a scenario, saying what falls short.
pub fn goal(results: &[ScenarioFigures]) -> Vec<(String, bool)> {
    let mut lines = Vec::new();
    for scenario in results {
        let name = scenario.entry.name;
        let Some(ours) = scenario.of(PolicyKind::Autoscaler) else {
            continue;
        };
        let mut short = Vec::new();
        for (kind, peer) in &scenario.by_policy {
            if matches!(kind, PolicyKind::Autoscaler | PolicyKind::Oracle) {
                continue;
            }
            let fewer = ours.over_target < peer.over_target
                || (ours.over_target == 0.0 && peer.over_target == 0.0);
            if !fewer {
                short.push(format!(
                    "{kind} has {} s over target, ours {}",
                    number(peer.over_target),
                    number(ours.over_target)
                ));
            }
            if ours.vm_seconds > peer.vm_seconds {
                short.push(format!(
                    "{kind} uses {:.0} VM-s, ours {:.0}",
                    peer.vm_seconds, ours.vm_seconds
                ));
            }
        }
        if let Some(oracle) = scenario.of(PolicyKind::Oracle) {
            let ratio = ours.vm_seconds / oracle.vm_seconds.max(1e-9);
            if ratio > 1.15 {
                short.push(format!("{ratio:.2}× the oracle's VM-s"));
            }
        }
        let met = short.is_empty();
        lines.push((
            if met {
                format!("{name}: met")
            } else {
                format!("{name}: not met: {}", short.join("; "))
            },
            met,
        ));
    }
    lines
}

/// For each scenario, the peers that beat ours on both counts: fewer seconds over
/// target at no more VM-seconds (the oracle included), or "none".
pub fn dominated(results: &[ScenarioFigures]) -> Vec<String> {
    results
        .iter()
        .filter_map(|scenario| {
            let ours = scenario.of(PolicyKind::Autoscaler)?;
            let better: Vec<String> = scenario
                .by_policy
                .iter()
                .filter(|(kind, f)| {
                    *kind != PolicyKind::Autoscaler
                        && f.over_target < ours.over_target
                        && f.vm_seconds <= ours.vm_seconds
                })
                .map(|(kind, f)| {
                    format!(
                        "{kind} ({} s over target, {:.0} VM-s)",
                        number(f.over_target),
                        f.vm_seconds
                    )
                })
                .collect();
            Some(format!(
                "{}: {}",
                scenario.entry.name,
                if better.is_empty() {
                    "none".to_owned()
                } else {
                    better.join(", ")
                }
            ))
        })
        .collect()
}
