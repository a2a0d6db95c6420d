//! What the benchmark measures inside its own process: each thread's CPU time (from
//! `/proc/self/task/<tid>/stat`), grouped by who owns the thread, and the database
//! statements each conductor sends (sqlx reports every statement as a `sqlx::query`
//! tracing event, emitted on the thread that runs the query: a conductor's runtime).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

/// Linux's USER_HZ: `/proc` reports CPU time in hundredths of a second.
const TICKS_PER_SECOND: f64 = 100.0;

/// One thread: its id, name (`comm`, at most 15 bytes) and CPU seconds so far.
#[derive(Debug, Clone)]
pub struct ThreadCpu {
    pub tid: u32,
    pub name: String,
    pub seconds: f64,
}

/// Every thread of this process now. A thread that ended is missing (its time is lost to
/// this view: the conductors' runtimes keep their threads alive for the whole run).
pub fn threads() -> Vec<ThreadCpu> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let name = stat.get(open + 1..close)?.to_owned();
            // Fields after the name: state is 0, utime 11 and stime 12.
            let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            let seconds = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
            Some(ThreadCpu { tid, name, seconds })
        })
        .collect()
}

/// The lapin I/O threads (one per broker connection) running now.
pub fn io_threads() -> BTreeSet<u32> {
    threads()
        .into_iter()
        .filter(|t| t.name == "lapin-io-loop")
        .map(|t| t.tid)
        .collect()
}

/// Which party owns which threads: its runtime's threads by name, and the broker I/O
/// threads that appeared when it connected.
#[derive(Debug, Default)]
pub struct Owners {
    io: BTreeMap<u32, String>,
}

impl Owners {
    /// Gives `owner` the I/O threads in `now` that were not in `before`.
    pub fn claim(&mut self, owner: &str, before: &BTreeSet<u32>, now: &BTreeSet<u32>) {
        for tid in now.difference(before) {
            self.io.insert(*tid, owner.to_owned());
        }
    }

    /// CPU seconds so far of each owner (threads named after it, and its I/O threads);
    /// threads nobody owns under `other`.
    pub fn cpu(&self) -> BTreeMap<String, f64> {
        let mut by_owner = BTreeMap::new();
        for t in threads() {
            let owner = match self.io.get(&t.tid) {
                Some(owner) => owner.clone(),
                None if t.name.starts_with("conductor-") || t.name == "agents" => t.name,
                None => "other".to_owned(),
            };
            *by_owner.entry(owner).or_insert(0.0) += t.seconds;
        }
        by_owner
    }
}

/// Statements sent so far, by the sending thread's name and the statement's first word
/// (`SELECT`, `UPDATE`, `INSERT`, `BEGIN`, ...).
static STATEMENTS: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

/// Counts `sqlx::query` events; nothing is printed.
struct CountStatements;

/// The statement's first word, from the event's `summary` field.
#[derive(Default)]
struct FirstWord(String);

impl Visit for FirstWord {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.0 = value
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut word = FirstWord::default();
        event.record(&mut word);
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let mut counts = STATEMENTS.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((thread, word.0)).or_insert(0) += 1;
    }
}

/// Installs the statement counter as the process's only tracing subscriber, enabled for
/// sqlx's statements only: the conductors' own log lines are not even formatted.
pub fn count_statements() {
    let only_statements = tracing_subscriber::filter::Targets::new()
        .with_target("sqlx::query", tracing::Level::DEBUG);
    tracing_subscriber::registry()
        .with(CountStatements.with_filter(only_statements))
        .init();
}

/// The statements counted so far, by (thread name, first word).
pub fn statements() -> BTreeMap<(String, String), u64> {
    STATEMENTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
