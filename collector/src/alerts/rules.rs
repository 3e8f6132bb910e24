//! Evaluating one rule: what each of its instances measures now, and whether that is bad.
//! Rules read per-minute aggregates and the latest samples, never raw spans.

use std::collections::BTreeMap;

use stormwatch_store::signals::{GroupFilter, Labels};
use stormwatch_store::{Store, StoreError};

use super::config::{Baseline, HostMetric, RuleConfig, RuleKind};

/// One instance of a rule as measured now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub labels: Labels,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// The condition holds.
    pub active: bool,
    /// One line: what is wrong.
    pub summary: String,
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn describe(labels: &Labels) -> String {
    let mut parts = Vec::new();
    if let Some(c) = labels.get("class") {
        parts.push(c.clone());
    }
    if let Some(o) = labels.get("operation") {
        parts.push(format!("`{o}`"));
    }
    let mut s = parts.join(" ");
    if let Some(svc) = labels.get("service") {
        s = if s.is_empty() {
            svc.clone()
        } else {
            format!("{s} of {svc}")
        };
    }
    if let Some(p) = labels.get("peer").filter(|p| !p.is_empty()) {
        s = format!("{s} → {p}");
    }
    if s.is_empty() {
        "all traffic".into()
    } else {
        s
    }
}

fn status_matches(status: &str, wanted: &[String]) -> bool {
    wanted.iter().any(|w| {
        if let Some(prefix) = w.strip_suffix("xx") {
            status.len() == 3 && status.starts_with(prefix)
        } else {
            status == w
        }
    })
}

/// The start (Unix seconds) of the minute holding `now - window`: aggregates are per minute.
fn window_start(now_s: f64, window_s: f64) -> i64 {
    ((now_s - window_s) / 60.0).floor() as i64 * 60
}

/// Measures every instance of `rule` at `now_s`. `listening_since_s` is when this collector
/// started: an agent's silence is not counted before it (the agent may well have been sending
/// to a collector that was down, and it replays what it spooled).
pub async fn evaluate(
    store: &Store,
    rule: &RuleConfig,
    now_s: f64,
    listening_since_s: f64,
) -> Result<Vec<Observation>, StoreError> {
    let window = rule.window.as_secs_f64().max(1.0);
    let group_by = rule.group_by();
    let keep = |labels: &Labels| -> Labels {
        labels
            .iter()
            .filter(|(k, _)| group_by.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut out = Vec::new();
    match rule.kind {
        RuleKind::Latency | RuleKind::ErrorRate => {
            let filter = GroupFilter {
                service: rule.service.clone(),
                class: rule.class,
                peer: rule.peer.clone(),
                operation: rule.operation.clone(),
            };
            let from = window_start(now_s, window);
            let to = now_s as i64 + 60;
            let groups = store.aggregate_groups(&filter, &group_by, from, to).await?;
            let min_count = rule.min_count.unwrap_or(10);
            if rule.kind == RuleKind::Latency {
                let q = rule.quantile.unwrap_or(0.95);
                let baselines: BTreeMap<Labels, f64> = match (rule.baseline, rule.factor) {
                    (Some(b), Some(_)) => {
                        let shift = match b {
                            Baseline::PreviousHour => 3_600,
                            Baseline::SameTimeYesterday => 86_400,
                        };
                        store
                            .aggregate_groups(&filter, &group_by, from - shift, to - shift)
                            .await?
                            .into_iter()
                            .filter(|g| g.count >= min_count)
                            .filter_map(|g| {
                                Some((g.labels.clone(), g.histogram.quantile(q)? / 1e6))
                            })
                            .collect()
                    }
                    _ => BTreeMap::new(),
                };
                for g in groups.into_iter().filter(|g| g.count >= min_count) {
                    let Some(value) = g.histogram.quantile(q).map(|ns| ns / 1e6) else {
                        continue;
                    };
                    let mut threshold = rule.threshold;
                    if let (Some(base), Some(factor)) = (baselines.get(&g.labels), rule.factor) {
                        let t = base * factor;
                        threshold = Some(threshold.map_or(t, |fixed| fixed.max(t)));
                    }
                    let Some(threshold) = threshold else { continue };
                    let label = format!("p{}", (q * 100.0).round());
                    out.push(Observation {
                        summary: format!(
                            "{label} of {} is {} (threshold {}, {} spans)",
                            describe(&g.labels),
                            fmt_ms(value),
                            fmt_ms(threshold),
                            g.count
                        ),
                        labels: keep(&g.labels),
                        value: Some(value),
                        threshold: Some(threshold),
                        active: value > threshold,
                    });
                }
            } else {
                let threshold = rule.threshold.unwrap_or(0.05);
                for g in groups.into_iter().filter(|g| g.count >= min_count) {
                    let (bad, what) = match &rule.statuses {
                        Some(st) => (
                            g.by_status
                                .iter()
                                .filter(|(s, _)| status_matches(s, st))
                                .map(|(_, n)| *n)
                                .sum::<u64>(),
                            format!("{} rate", st.join("/")),
                        ),
                        None => (g.errors, "error rate".to_owned()),
                    };
                    let rate = bad as f64 / g.count as f64;
                    out.push(Observation {
                        summary: format!(
                            "{what} of {} is {:.1} % ({bad} of {}; threshold {:.1} %)",
                            describe(&g.labels),
                            rate * 100.0,
                            g.count,
                            threshold * 100.0
                        ),
                        labels: keep(&g.labels),
                        value: Some(rate),
                        threshold: Some(threshold),
                        active: rate > threshold,
                    });
                }
            }
        }
        RuleKind::ReplicationLag => {
            // A probe older than the window says nothing about now.
            for p in store.latest_probes(now_s - window.max(30.0)).await? {
                if p.role != "replica" || rule.database.as_ref().is_some_and(|d| d != &p.database) {
                    continue;
                }
                let lag = p.lag_seconds.unwrap_or(0.0);
                let threshold = rule.threshold.unwrap_or(f64::INFINITY);
                let paused = p.replay_paused && rule.replay_paused.unwrap_or(true);
                let summary = if paused {
                    format!(
                        "replay is paused on replica {} ({lag:.1} s behind)",
                        p.database
                    )
                } else {
                    format!(
                        "replica {} is {lag:.1} s behind (threshold {threshold} s)",
                        p.database
                    )
                };
                out.push(Observation {
                    labels: Labels::from([("database".to_owned(), p.database)]),
                    value: Some(lag),
                    threshold: threshold.is_finite().then_some(threshold),
                    active: lag > threshold || paused,
                    summary,
                });
            }
        }
        RuleKind::DbConnect => {
            for w in store.probe_windows(now_s - window).await? {
                if rule.database.as_ref().is_some_and(|d| d != &w.database) {
                    continue;
                }
                let failures: u64 = w
                    .failures
                    .iter()
                    .filter(|(class, _)| {
                        rule.failure_classes
                            .as_ref()
                            .is_none_or(|fc| fc.contains(class))
                    })
                    .map(|(_, n)| *n)
                    .sum();
                let classes: Vec<String> = w
                    .failures
                    .iter()
                    .map(|(c, n)| format!("{c} ×{n}"))
                    .collect();
                let too_many = rule.threshold.is_some_and(|t| failures as f64 >= t);
                let too_slow =
                    matches!((rule.connect_ms, w.max_connect_ms), (Some(t), Some(ms)) if ms > t);
                let summary = if failures > 0 {
                    format!(
                        "{failures} failed connection{} to {} ({}) in the last {}",
                        if failures == 1 { "" } else { "s" },
                        w.database,
                        classes.join(", "),
                        fmt_window(window)
                    )
                } else {
                    format!(
                        "connecting to {} takes up to {}",
                        w.database,
                        fmt_ms(w.max_connect_ms.unwrap_or(0.0))
                    )
                };
                out.push(Observation {
                    labels: Labels::from([("database".to_owned(), w.database)]),
                    value: Some(failures as f64),
                    threshold: rule.threshold,
                    active: too_many || too_slow,
                    summary,
                });
            }
        }
        RuleKind::FullScan => {
            let threshold = rule.threshold.unwrap_or(1.0);
            for f in store
                .flag_counts("full_scan_suspect", window_start(now_s, window))
                .await?
            {
                if rule.service.as_ref().is_some_and(|s| s != &f.service) {
                    continue;
                }
                let labels = Labels::from([
                    ("service".to_owned(), f.service.clone()),
                    ("operation".to_owned(), f.operation.clone()),
                    ("peer".to_owned(), f.peer.clone()),
                ]);
                out.push(Observation {
                    summary: format!(
                        "{} full-scan suspects from `{}` of {} on {}",
                        f.count, f.operation, f.service, f.peer
                    ),
                    labels: keep(&labels),
                    value: Some(f.count as f64),
                    threshold: Some(threshold),
                    active: f.count as f64 >= threshold,
                });
            }
        }
        RuleKind::AgentSilent | RuleKind::SpansDropped => {
            let threshold = rule.threshold.unwrap_or(60.0);
            for a in store.agent_states(now_s - window).await? {
                let labels = Labels::from([("agent".to_owned(), a.agent_id.clone())]);
                if rule.kind == RuleKind::AgentSilent {
                    let silent = (now_s - a.last_seen_s.max(listening_since_s)).max(0.0);
                    out.push(Observation {
                        summary: format!(
                            "agent {} has sent nothing for {:.0} s",
                            a.agent_id, silent
                        ),
                        labels,
                        value: Some(silent),
                        threshold: Some(threshold),
                        active: silent > threshold,
                    });
                } else {
                    out.push(Observation {
                        summary: format!(
                            "agent {} dropped {} spans in the last {}",
                            a.agent_id,
                            a.dropped_in_window,
                            fmt_window(window)
                        ),
                        labels,
                        value: Some(a.dropped_in_window as f64),
                        threshold: Some(threshold),
                        active: a.dropped_in_window as f64 >= threshold,
                    });
                }
            }
        }
        RuleKind::Host => {
            let threshold = rule.threshold.unwrap_or(90.0);
            for h in store.latest_hosts(now_s - window.max(30.0)).await? {
                if rule.host.as_ref().is_some_and(|x| x != &h.host) {
                    continue;
                }
                let (name, value) = match rule.metric.unwrap_or(HostMetric::Cpu) {
                    HostMetric::Cpu => ("CPU", h.cpu_percent),
                    HostMetric::Memory => ("memory", h.mem_percent),
                    HostMetric::Disk => ("disk", h.disk_percent),
                };
                out.push(Observation {
                    summary: format!(
                        "{name} of {} at {value:.0} % (threshold {threshold:.0} %)",
                        h.host
                    ),
                    labels: Labels::from([("host".to_owned(), h.host)]),
                    value: Some(value),
                    threshold: Some(threshold),
                    active: value > threshold,
                });
            }
        }
    }
    Ok(out)
}

fn fmt_window(secs: f64) -> String {
    if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{} min", secs / 60.0)
    } else {
        format!("{secs:.0} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_descriptions() {
        assert!(status_matches("503", &["5xx".into()]));
        assert!(status_matches("503", &["503".into()]));
        assert!(!status_matches("404", &["5xx".into()]));
        assert!(!status_matches("error", &["5xx".into()]));
        let labels = Labels::from([
            ("service".into(), "board".into()),
            ("class".into(), "redis".into()),
            ("peer".into(), "redis:6379".into()),
        ]);
        assert_eq!(describe(&labels), "redis of board → redis:6379");
        assert_eq!(window_start(1_000_000.0, 60.0), 999_900);
    }
}
