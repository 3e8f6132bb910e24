//! Incident causes benchmark: how long the alert leader takes to work out an incident's
//! ranked causes (and its recurrence) over 1 h of a store holding a day of traffic.
//!
//! Fills a fresh database with `BENCH_SPANS` spans (default 10M, the testkit's day of
//! traffic: 5 services, over `BENCH_HOURS` = 24 h, with their per-minute aggregates), then
//! works out the causes of a two-alert incident that opened 30 min before the end (a Redis
//! peer slow, an operation answering 503) `BENCH_RUNS` times (default 20): the traffic of the
//! services concerned during the incident and over the hour before, from the aggregates, and
//! the ranking. Prints p50/p95/max; asserts nothing.
//!
//! `cargo bench -p stormwatch-collector --bench causes` (`BENCH_SPANS=2000000` for a quick run).

use std::time::Instant;

use stormwatch_collector::alerts::config::RuleKind;
use stormwatch_collector::incidents::cause::AlertFacts;
use stormwatch_collector::incidents::{causes, recurrence, Relations, EDGES_LOOKBACK_S};
use stormwatch_store::signals::Labels;
use stormwatch_store::{Store, StoreOptions};

const NS: i64 = 1_000_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fact(rule: &str, kind: RuleKind, labels: &[(&str, &str)], started: f64) -> AlertFacts {
    AlertFacts {
        rule: rule.into(),
        kind: Some(kind),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Labels>(),
        started,
        value: Some(300.0),
        summary: format!("{rule} fired"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let total = env("BENCH_SPANS", 10_000_000);
        let hours = env("BENCH_HOURS", 24) as i64;
        let runs = env("BENCH_RUNS", 20) as usize;
        let store = Store::connect(&StoreOptions {
            url: stormwatch_testkit::fresh_database().await,
            max_connections: 8,
            retention_days: 7,
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let now = stormwatch_store::now_ns();
        let fill = stormwatch_testkit::load::fill(&store, total, hours, now).await;
        store.vacuum_analyze().await.unwrap();
        println!(
            "filled {total} spans over {hours} h in {:.1} s",
            fill.as_secs_f64()
        );
        let end = (now / NS) as f64;
        let opened = end - 1_800.0;
        let facts = vec![
            fact(
                "dependency-latency",
                RuleKind::Latency,
                &[("class", "redis"), ("peer", "redis:6379")],
                opened,
            ),
            fact(
                "http-5xx-rate",
                RuleKind::ErrorRate,
                &[("service", "board"), ("operation", "GET /posts")],
                opened + 5.0,
            ),
        ];
        let mut edges_t = Vec::new();
        let mut causes_t = Vec::new();
        let mut recurrence_t = Vec::new();
        let mut line = String::new();
        for _ in 0..runs + 1 {
            let t = Instant::now();
            let rel = Relations {
                edges: store
                    .dependency_edges(end as i64 - EDGES_LOOKBACK_S, end as i64 + 60)
                    .await
                    .unwrap(),
            };
            edges_t.push(t.elapsed());
            let t = Instant::now();
            let ranked = causes(&store, &rel, &facts, opened, opened + 600.0)
                .await
                .unwrap();
            causes_t.push(t.elapsed());
            let t = Instant::now();
            recurrence::recurrence(&store, &facts).await.unwrap();
            recurrence_t.push(t.elapsed());
            line = ranked.first().map(|c| c.line.clone()).unwrap_or_default();
        }
        println!("first-ranked cause: {line}");
        for (name, mut times) in [
            ("callers of the peers (15 min)", edges_t),
            ("causes over 1 h (incident 10 min + baseline 1 h)", causes_t),
            ("recurrence (7 days)", recurrence_t),
        ] {
            // The first run warms the caches and prepared statements.
            times.remove(0);
            times.sort();
            let q =
                |f: f64| times[((times.len() - 1) as f64 * f).round() as usize].as_secs_f64() * 1e3;
            println!(
                "{name:<50} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms",
                q(0.5),
                q(0.95),
                q(1.0)
            );
        }
    });
}
