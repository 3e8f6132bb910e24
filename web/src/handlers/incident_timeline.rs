//! The data behind an incident's timeline ([`crate::charts::timeline`]): its alerts as bars,
//! the failed probes and lag of the databases it names, the p95 and 5xx of the operations it
//! names and the p95 of its first-ranked dependency cause, the flag counts, and the versions
//! deployed (change events), from five minutes before it to two after.

use std::collections::{BTreeMap, BTreeSet};

use stormwatch_model::enums::WireEnum;
use stormwatch_model::DependencyClass;
use stormwatch_store::aggregates::AggregateFilter;
use stormwatch_store::incidents::Incident;
use stormwatch_store::{Store, StoreError};

use crate::charts::palette;
use crate::charts::timeline::{Bar, Lane, Mark, Strip, Timeline};
use crate::range::{duration, utc_human};

/// Shown before the incident's first alert and after its end.
const BEFORE_MS: i64 = 5 * 60_000;
const AFTER_MS: i64 = 2 * 60_000;
/// At most this many operations get p95 and 5xx rows.
const MAX_OPERATIONS: usize = 3;

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn seconds(v: f64) -> String {
    format!("{v:.1} s")
}

/// The incident's timeline, `now_ms` closing it while it is open.
pub async fn build(store: &Store, i: &Incident, now_ms: i64) -> Result<Timeline, StoreError> {
    let start = (i.opened * 1000.0) as i64;
    let end = i.resolved.map_or(now_ms, |r| (r * 1000.0) as i64);
    let (from_ms, to_ms) = (start - BEFORE_MS, end.max(start + 60_000) + AFTER_MS);
    let (from_s, to_s) = (from_ms.div_euclid(1000), to_ms.div_euclid(1000) + 1);
    let mut t = Timeline {
        title: format!("Incident #{}: timeline", i.id),
        from_ms,
        to_ms,
        span: (start, end),
        lanes: vec![],
        strips: vec![],
        marks: vec![],
    };

    // The alerts.
    let mut databases: BTreeSet<String> = BTreeSet::new();
    let mut operations: Vec<(String, String)> = Vec::new();
    for a in &i.alerts {
        let on: Vec<&str> = a.labels.values().map(String::as_str).collect();
        let from = (a.started * 1000.0) as i64;
        let until = a.resolved.map_or(end, |r| (r * 1000.0) as i64);
        t.lanes.push(Lane {
            label: format!("{} {}", a.rule, on.join(" · ")),
            bars: vec![Bar {
                from_ms: from,
                to_ms: until,
                title: format!(
                    "{}: {} (from {}{})",
                    a.rule,
                    a.summary,
                    utc_human(from),
                    a.resolved
                        .map(|_| format!(" to {}", utc_human(until)))
                        .unwrap_or_else(|| ", still firing".into())
                ),
                color: if a.severity == "critical" {
                    palette::VERMILLION
                } else {
                    palette::ORANGE
                },
            }],
        });
        if let Some(d) = a.labels.get("database") {
            databases.insert(d.clone());
        }
        if let (Some(s), Some(o)) = (a.labels.get("service"), a.labels.get("operation")) {
            if !operations.contains(&(s.clone(), o.clone())) {
                operations.push((s.clone(), o.clone()));
            }
        }
    }
    // The first-ranked cause when it is a dependency: its p95; an operation it explains.
    let top = i.cause.get(0);
    let field = |k: &str| top.and_then(|c| c.get(k)).and_then(|v| v.as_str());
    let dependency = match (field("class"), field("peer")) {
        (Some(c), Some(p)) => DependencyClass::from_name(c).map(|c| (c, p.to_owned())),
        _ => None,
    };
    if let (Some(s), Some(o)) = (field("service"), field("operation")) {
        if !operations.contains(&(s.to_owned(), o.to_owned())) {
            operations.insert(0, (s.to_owned(), o.to_owned()));
        }
    }
    if let Some((DependencyClass::Db, p)) = &dependency {
        databases.insert(super::map::peer_name(p).to_owned());
    }
    operations.truncate(MAX_OPERATIONS);

    // Probes of the databases it names, every 10 s (or finer steps on long incidents).
    let step_s = ((to_s - from_s) / 120).max(10);
    let probes = if databases.is_empty() {
        vec![]
    } else {
        store.probe_series(from_s, to_s, step_s).await?
    };
    for db in &databases {
        let points: Vec<_> = probes.iter().filter(|p| &p.database == db).collect();
        let mut bars: Vec<Bar> = Vec::new();
        let mut lag: BTreeMap<i64, f64> = BTreeMap::new();
        for p in &points {
            if p.failures > 0 {
                bars.push(Bar {
                    from_ms: p.time_ms,
                    to_ms: p.time_ms + step_s * 1000,
                    title: format!(
                        "{db}, {}: {} of {} probes failed{} ({} via {})",
                        utc_human(p.time_ms),
                        p.failures,
                        p.samples,
                        if p.refused > 0 {
                            format!(", {} refused", p.refused)
                        } else {
                            String::new()
                        },
                        p.role,
                        p.agent_id
                    ),
                    color: palette::VERMILLION,
                });
            }
            if let Some(l) = p.lag_seconds_max {
                let e = lag.entry(p.time_ms).or_insert(l);
                *e = e.max(l);
            }
        }
        if !points.is_empty() {
            t.lanes.push(Lane {
                label: format!("probes {db} (failed)"),
                bars,
            });
        }
        if lag.values().any(|l| *l > 0.0) {
            t.strips.push(Strip {
                label: format!("lag {db}"),
                color: palette::BLUE,
                points: lag.into_iter().map(|(t, l)| (t, Some(l))).collect(),
                format: seconds,
            });
        }
    }

    // Per-minute series from the aggregates.
    let series = |service: Option<String>,
                  class: Option<DependencyClass>,
                  peer: Option<String>,
                  operation: Option<String>| AggregateFilter {
        service,
        class,
        peer,
        operation,
        from_s,
        to_s,
        step_s: 60,
    };
    if let Some((class, peer)) = &dependency {
        let points = store
            .aggregate_series(&series(None, Some(*class), Some(peer.clone()), None))
            .await?;
        t.strips.push(Strip {
            label: format!("p95 {} {peer}", class.as_str()),
            color: palette::VERMILLION,
            points: points.iter().map(|p| (p.time, p.p95_ms)).collect(),
            format: duration,
        });
    }
    for (k, (service, operation)) in operations.iter().enumerate() {
        let points = store
            .aggregate_series(&series(
                Some(service.clone()),
                Some(DependencyClass::HttpServer),
                None,
                Some(operation.clone()),
            ))
            .await?;
        if points.iter().all(|p| p.count == 0) {
            continue;
        }
        t.strips.push(Strip {
            label: format!("p95 {operation} ({service})"),
            color: palette::SERIES[k % 4],
            points: points.iter().map(|p| (p.time, p.p95_ms)).collect(),
            format: duration,
        });
        if points.iter().any(|p| p.http_5xx > 0) {
            t.strips.push(Strip {
                label: format!("5xx/min {operation}"),
                color: palette::SERIES[k % 4],
                points: points
                    .iter()
                    .map(|p| (p.time, Some(p.http_5xx as f64)))
                    .collect(),
                format: count,
            });
        }
    }

    // Versions new to their service: change events across the whole strip.
    for c in store
        .version_changes(None, from_s as f64, to_s as f64)
        .await?
    {
        let at = (c.at * 1000.0) as i64;
        t.marks.push(Mark {
            at_ms: at,
            title: format!("{}: {}", utc_human(at), c.words()),
        });
    }

    // Flagged spans per minute, by flag.
    let mut flags: BTreeMap<String, Vec<(i64, Option<f64>)>> = BTreeMap::new();
    for (flag, minute, n) in store.flag_minutes(from_s, to_s).await? {
        flags
            .entry(flag)
            .or_default()
            .push((minute * 1000, Some(n as f64)));
    }
    for (flag, points) in flags {
        t.strips.push(Strip {
            label: format!("{} spans/min", flag.replace('_', " ")),
            color: palette::PURPLE,
            points,
            format: count,
        });
    }
    Ok(t)
}
