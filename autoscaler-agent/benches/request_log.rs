//! Throughput of the splitter's measurement pipeline, in log lines per second: parsing the
//! splitter's and the seed's request-log formats, and parsing plus aggregating one
//! interval. The target is at least 1,000,000 lines/s per core.
//!
//! The agent is a binary crate, so the pure modules are compiled into the bench by path.

// The bench uses only part of each module.
#![allow(dead_code)]

#[path = "../src/request_log.rs"]
mod request_log;

#[path = "../src/aggregate.rs"]
mod aggregate;

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use aggregate::Aggregator;
use request_log::{parse, Line};

/// Lines per iteration: about a second of a busy site.
const LINES: usize = 10_000;

/// Lines like the measured ones: four members, response times from 1 ms to a few
/// seconds, one response in 50 an error, a mod_jk message now and then.
fn rich_lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            if i % 500 == 499 {
                return "[Fri Nov 27 19:27:10.185 2026] [12345:140234] [info] \
                        ajp_service::jk_ajp_common.c (2795): (worker1) sending request"
                    .to_owned();
            }
            let micros = (i * 7919) % 3_000_000 + 1_000;
            let status = if i % 50 == 0 { 503 } else { 200 };
            format!(
                "[Fri Nov 27 19:27:10.{:03} 2026] loadbalancer worker{} 127.0.0.1 {}.{:06} {status}",
                i % 1000,
                i % 4 + 1,
                micros / 1_000_000,
                micros % 1_000_000,
            )
        })
        .collect()
}

fn seed_lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            let micros = (i * 7919) % 3_000_000 + 1_000;
            format!(
                "[Fri Nov 27 19:12:26 2026]loadbalancer 127.0.0.1 {}.{:06}",
                micros / 1_000_000,
                micros % 1_000_000,
            )
        })
        .collect()
}

fn requests(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|line| matches!(parse(black_box(line)), Line::Request(_)))
        .count()
}

fn bench(c: &mut Criterion) {
    let rich = rich_lines();
    let seed = seed_lines();
    assert_eq!(requests(&rich), LINES - LINES / 500);
    assert_eq!(requests(&seed), LINES);

    let mut group = c.benchmark_group("request_log");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("parse_rich", |b| b.iter(|| requests(&rich)));
    group.bench_function("parse_seed", |b| b.iter(|| requests(&seed)));

    let start: DateTime<Utc> = "2026-11-27T19:27:10Z".parse().expect("a valid time");
    let end: DateTime<Utc> = "2026-11-27T19:27:11Z".parse().expect("a valid time");
    let mut aggregator = Aggregator::new("shop", "vm-0", start);
    group.bench_function("parse_and_aggregate_rich", |b| {
        b.iter(|| {
            for line in &rich {
                aggregator.record_line(&parse(black_box(line)));
            }
            black_box(aggregator.take(end))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
