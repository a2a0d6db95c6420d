//! The figures `ha-bench` prints (a table, or JSON with `--json`), and the removal of
//! what the bench declared on the broker.

use std::collections::BTreeMap;

use autoscaler::messaging::{link, LinkConfig, TransportUrl};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde::Serialize;

/// CPU seconds by owner (`conductor-a`, `conductor-b`, `agents`, `other`).
type Cpu = BTreeMap<String, f64>;
/// Statements by (thread name, first word).
type Statements = BTreeMap<(String, String), u64>;

#[derive(Debug, Serialize)]
pub struct Report {
    pub sites: usize,
    /// VMs in the in-memory cloud (web VMs and splitters).
    pub vms: usize,
    /// From the start of the conductors to every site held and its pool received.
    pub settled_s: f64,
    pub steady: Steady,
    pub failover: Failover,
    /// The survivor alone with every site, over a window as long as the steady one, once
    /// it has stepped them all and written their pools (`None` when it did not step them
    /// all within the limit).
    pub alone: Option<Steady>,
}

/// One conductor over the steady window.
#[derive(Debug, Serialize)]
pub struct PerConductor {
    pub host: String,
    /// Sites whose lease it held at the end of the window.
    pub sites: i64,
    /// CPU time over wall time: 1.0 is one core.
    pub cpu_cores: f64,
    pub statements_per_s: f64,
    /// Statements per second by kind (SELECT, UPDATE, INSERT, BEGIN, COMMIT, ...).
    pub by_kind: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Steady {
    pub seconds: f64,
    pub conductors: Vec<PerConductor>,
    /// The simulated agents' thread and broker I/O, and threads nobody owns (the
    /// bench's own), as fractions of a core.
    pub agents_cpu_cores: f64,
    pub other_cpu_cores: f64,
    /// Messages the agents published per second (heartbeats, metrics, acknowledgements).
    pub published_per_s: f64,
    /// Group listings the cloud answered per second (both conductors).
    pub listings_per_s: f64,
    /// Sites stepped by no conductor, by exactly one, and by both in the window.
    pub stepped_by_none: usize,
    pub stepped_by_one: usize,
    pub stepped_by_both: usize,
}

fn delta(before: &Cpu, after: &Cpu, owner: &str) -> f64 {
    after.get(owner).unwrap_or(&0.0) - before.get(owner).unwrap_or(&0.0)
}

/// Statements of `host`'s threads between two counts, by kind.
fn statements_of(before: &Statements, after: &Statements, host: &str) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for ((thread, kind), n) in after {
        if thread == host {
            let was = before.get(&(thread.clone(), kind.clone())).unwrap_or(&0);
            if n > was {
                kinds.insert(kind.clone(), n - was);
            }
        }
    }
    kinds
}

impl Steady {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seconds: f64,
        cpu: (&Cpu, &Cpu),
        statements: (&Statements, &Statements),
        stepped: &[Vec<String>],
        published_per_s: f64,
        listings_per_s: f64,
        owners: Vec<(String, i64)>,
    ) -> Steady {
        let conductors = super::HOSTS
            .iter()
            .map(|host| {
                let kinds = statements_of(statements.0, statements.1, host);
                PerConductor {
                    host: host.to_string(),
                    sites: owners
                        .iter()
                        .find(|(h, _)| h == host)
                        .map_or(0, |(_, n)| *n),
                    cpu_cores: delta(cpu.0, cpu.1, host) / seconds,
                    statements_per_s: kinds.values().sum::<u64>() as f64 / seconds,
                    by_kind: kinds
                        .into_iter()
                        .map(|(k, n)| (k, n as f64 / seconds))
                        .collect(),
                }
            })
            .collect();
        let by = |n: usize| stepped.iter().filter(|hosts| hosts.len() == n).count();
        Steady {
            seconds,
            conductors,
            agents_cpu_cores: delta(cpu.0, cpu.1, "agents") / seconds,
            other_cpu_cores: delta(cpu.0, cpu.1, "other") / seconds,
            published_per_s,
            listings_per_s,
            stepped_by_none: by(0),
            stepped_by_one: by(1),
            stepped_by_both: by(2),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Failover {
    /// The conductor stopped as kill -9 would, and how many sites it held.
    pub killed: String,
    pub killed_held: i64,
    pub survivor: String,
    /// From the kill to the survivor holding every site; `None` when it did not within
    /// the bench's limit.
    pub all_held_s: Option<f64>,
    /// From the kill to the survivor having held and stepped every site.
    pub all_stepped_s: Option<f64>,
    /// The survivor's CPU (fraction of a core) and statements from the kill to the end.
    pub survivor_cpu_cores: f64,
    pub survivor_statements: u64,
}

impl Failover {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        killed: String,
        held_before: Vec<(String, i64)>,
        all_held: Option<std::time::Duration>,
        all_stepped: Option<std::time::Duration>,
        seconds: f64,
        cpu: (&Cpu, &Cpu),
        statements: (&Statements, &Statements),
        survivor: &str,
    ) -> Failover {
        Failover {
            killed_held: held_before
                .iter()
                .find(|(h, _)| *h == killed)
                .map_or(0, |(_, n)| *n),
            killed,
            survivor: survivor.to_owned(),
            all_held_s: all_held.map(|d| d.as_secs_f64()),
            all_stepped_s: all_stepped.map(|d| d.as_secs_f64()),
            survivor_cpu_cores: delta(cpu.0, cpu.1, survivor) / seconds,
            survivor_statements: statements_of(statements.0, statements.1, survivor)
                .values()
                .sum(),
        }
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or("not within the limit".to_owned(), |s| format!("{s:.1} s"))
}

impl Report {
    /// The figures as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} sites, {} VMs in the cloud; settled (every site held, every splitter given a pool) in {:.1} s\n\n",
            self.sites, self.vms, self.settled_s,
        );
        out += &self.steady.table();
        let f = &self.failover;
        out += &format!(
            "failover: {} killed (held {} sites, no lease released); {} held all {} sites after {} and had stepped them all after {}; \
             its CPU meanwhile {:.3} cores, {} statements\n",
            f.killed, f.killed_held, f.survivor, self.sites, secs(f.all_held_s), secs(f.all_stepped_s),
            f.survivor_cpu_cores, f.survivor_statements,
        );
        if let Some(alone) = &self.alone {
            out += &format!("\nthen {} alone with every site:\n\n", f.survivor);
            out += &alone.table();
        }
        out
    }
}

impl Steady {
    /// One window's figures: a row per figure, a column per conductor, then the totals.
    fn table(&self) -> String {
        let mut out = format!(
            "| figure | {} |\n|---|{}\n",
            self.conductors
                .iter()
                .map(|c| c.host.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(self.conductors.len()),
        );
        let row = |name: &str, f: &dyn Fn(&PerConductor) -> String| {
            let cells: Vec<String> = self.conductors.iter().map(f).collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        };
        out += &row("sites held", &|c| c.sites.to_string());
        out += &row("CPU (cores)", &|c| format!("{:.3}", c.cpu_cores));
        out += &row("statements/s", &|c| format!("{:.2}", c.statements_per_s));
        out += &row("of which", &|c| {
            let kinds: Vec<String> = c
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n:.2}"))
                .collect();
            kinds.join(", ")
        });
        out += &format!(
            "\nwindow {:.0} s: agents published {:.0} messages/s (their CPU {:.3} cores, the bench's other threads {:.3}); \
             the cloud answered {:.0} listings/s; sites stepped by one conductor {}, by both {}, by none {}\n",
            self.seconds, self.published_per_s, self.agents_cpu_cores, self.other_cpu_cores, self.listings_per_s,
            self.stepped_by_one, self.stepped_by_both, self.stepped_by_none,
        );
        out
    }
}

/// Deletes the bench's exchange and queues (those a killed conductor's connection left
/// behind included); whatever is already gone is skipped.
pub async fn delete_broker_objects(broker: &str, exchange: &str, hosts: &[&str]) {
    let Ok(url) = broker.parse::<TransportUrl>() else {
        return;
    };
    let Ok((connection, _)) = link::connect(&LinkConfig::new(url, "habench-cleanup"), 0).await
    else {
        return;
    };
    let mut queues = vec![
        format!("{exchange}.conductor.rpc"),
        format!("{exchange}.habench.splitters"),
    ];
    queues.extend(
        hosts
            .iter()
            .map(|h| format!("{exchange}.conductor.telemetry.{h}")),
    );
    for queue in queues {
        // A failed delete closes the channel: one channel per delete.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}
