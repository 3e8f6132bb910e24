//! Evaluating one rule: what each of its instances measures now, and whether that is bad.
//! Rules read per-minute aggregates and the latest samples, never raw spans.

use std::collections::BTreeMap;

use stormwatch_store::recent_cache::RecentCache;
use stormwatch_store::signals::{Group, GroupFilter, Labels};
use stormwatch_store::{Store, StoreError};

use super::config::{latency_floor_ms, Baseline, HostMetric, RuleConfig, RuleKind};

/// Windows up to this long are read from what arrived in them (`sw_recent_aggregates`, kept
/// 15 minutes); longer ones from the per-minute aggregates.
const RECENT_WINDOW_MAX_S: f64 = 600.0;
/// Latency and error-rate windows up to this long are answered from the leader's
/// [`RecentCache`] (it holds the longest of them, merged per key and 5-s bucket); longer ones
/// read their window each round.
const CACHED_WINDOW_MAX_S: f64 = 60.0;

/// The seconds of recent aggregates the rules answered from the [`RecentCache`] need: the
/// longest of their windows, 0 when no rule is answered from it.
pub fn cached_horizon_s(rules: &[RuleConfig]) -> i64 {
    rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Latency | RuleKind::ErrorRate))
        .map(|r| r.window.as_secs_f64().max(1.0))
        .filter(|w| *w <= CACHED_WINDOW_MAX_S)
        .fold(0.0, f64::max)
        .ceil() as i64
}
/// A minute counts towards a baseline when it holds at least this many spans.
const BASELINE_MIN_COUNT: u64 = 10;
/// Yesterday's baseline looks at this many minutes either side of the same time.
const YESTERDAY_HALF_WIDTH_S: i64 = 15 * 60;

/// The traffic of `window` seconds before `now_s`: what arrived in it when the window is short
/// (an incident shows as soon as its spans arrive, and its end as soon as they stop), else the
/// per-minute aggregates from the minute holding its start.
async fn traffic_groups(
    store: &Store,
    recent: &RecentCache,
    filter: &GroupFilter,
    group_by: &[String],
    now_s: f64,
    window: f64,
) -> Result<Vec<Group>, StoreError> {
    if let Some(groups) = recent.groups(filter, group_by, now_s - window, now_s) {
        Ok(groups)
    } else if window <= RECENT_WINDOW_MAX_S {
        store.recent_groups(filter, group_by, now_s - window).await
    } else {
        let from = window_start(now_s, window);
        store
            .aggregate_groups(filter, group_by, from, now_s as i64 + 60)
            .await
    }
}

/// The agent's catch-all row for keys past its per-minute cap: not one peer or endpoint.
fn is_overflow(labels: &Labels) -> bool {
    labels.values().any(|v| v == "(overflow)")
}

/// What rules keep between rounds: baselines by rule, computed once a minute (they only read
/// whole minutes), and the recent aggregates read so far.
#[derive(Debug, Default)]
pub struct RuleCache {
    /// Refreshed before each round's rules (see [`cached_horizon_s`]).
    pub recent: RecentCache,
    by_rule: BTreeMap<String, (i64, BTreeMap<Labels, f64>)>,
    /// The baseline of each instance whose condition holds, kept as it was when the condition
    /// began: an incident must not become its own baseline (a 3-minute slowdown is most of a
    /// young install's history).
    /// `None` held means "there was no baseline": the floor alone stays the threshold.
    held: BTreeMap<(String, Labels), Option<f64>>,
    chore_minute: i64,
}

impl RuleCache {
    /// True once per minute of `now_s`: time for the once-a-minute chores.
    pub fn take_minute_chore(&mut self, now_s: f64) -> bool {
        let minute = (now_s / 60.0).floor() as i64;
        let due = minute != self.chore_minute;
        self.chore_minute = minute;
        due
    }
}

/// The median of `values` (sorted in place); `None` when empty.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The quantile `q` (ms) of every instance in each whole minute of `[from_s, to_s)`, reduced
/// to its median over those minutes (minutes with fewer than [`BASELINE_MIN_COUNT`] spans left
/// out).
async fn minute_medians(
    store: &Store,
    filter: &GroupFilter,
    group_by: &[String],
    q: f64,
    from_s: i64,
    to_s: i64,
) -> Result<BTreeMap<Labels, f64>, StoreError> {
    let mut per_minute: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for (_, g) in store.minute_groups(filter, group_by, from_s, to_s).await? {
        if g.count < BASELINE_MIN_COUNT {
            continue;
        }
        if let Some(v) = g.histogram.quantile(q) {
            per_minute.entry(g.labels).or_default().push(v / 1e6);
        }
    }
    Ok(per_minute
        .into_iter()
        .filter_map(|(l, mut v)| Some((l, median(&mut v)?)))
        .collect())
}

/// Each instance's baseline for `rule` (ms), from `cache` when this minute's is there.
#[allow(clippy::too_many_arguments)]
async fn baselines(
    store: &Store,
    cache: &mut RuleCache,
    rule: &RuleConfig,
    filter: &GroupFilter,
    group_by: &[String],
    baseline: Baseline,
    q: f64,
    now_s: f64,
) -> Result<BTreeMap<Labels, f64>, StoreError> {
    let minute = (now_s / 60.0).floor() as i64 * 60;
    if let Some((m, b)) = cache.by_rule.get(&rule.name) {
        if *m == minute {
            return Ok(b.clone());
        }
    }
    let b = match baseline {
        // The hour before the current minute, and the same half hour yesterday.
        Baseline::Usual => {
            let hour = minute_medians(store, filter, group_by, q, minute - 3_600, minute).await?;
            let yesterday = minute_medians(
                store,
                filter,
                group_by,
                q,
                minute - 86_400 - YESTERDAY_HALF_WIDTH_S,
                minute - 86_400 + YESTERDAY_HALF_WIDTH_S,
            )
            .await?;
            let mut b = hour;
            for (l, v) in yesterday {
                let e = b.entry(l).or_insert(v);
                *e = e.max(v);
            }
            b
        }
        // The same window, an hour or a day earlier, as one histogram.
        Baseline::PreviousHour | Baseline::SameTimeYesterday => {
            let shift = if baseline == Baseline::PreviousHour {
                3_600
            } else {
                86_400
            };
            let from = window_start(now_s, rule.window.as_secs_f64().max(1.0));
            store
                .aggregate_groups(filter, group_by, from - shift, now_s as i64 + 60 - shift)
                .await?
                .into_iter()
                .filter(|g| g.count >= rule.min_count.unwrap_or(10))
                .filter_map(|g| Some((g.labels.clone(), g.histogram.quantile(q)? / 1e6)))
                .collect()
        }
    };
    cache.by_rule.insert(rule.name.clone(), (minute, b.clone()));
    Ok(b)
}

pub use super::observation::Observation;

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
    cache: &mut RuleCache,
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
            let groups =
                traffic_groups(store, &cache.recent, &filter, &group_by, now_s, window).await?;
            let wanted_class = |g: &Group| match (&rule.classes, g.labels.get("class")) {
                (Some(classes), Some(c)) => classes.iter().any(|k| k.as_str() == c),
                _ => true,
            };
            let groups: Vec<Group> = groups
                .into_iter()
                .filter(|g| wanted_class(g) && !is_overflow(&g.labels))
                .collect();
            let min_count = rule.min_count.unwrap_or(10);
            if rule.kind == RuleKind::Latency {
                let q = rule.quantile.unwrap_or(0.95);
                let baselines = match (rule.baseline, rule.factor) {
                    (Some(b), Some(_)) => {
                        baselines(store, cache, rule, &filter, &group_by, b, q, now_s).await?
                    }
                    _ => BTreeMap::new(),
                };
                for g in groups.into_iter().filter(|g| g.count >= min_count) {
                    let Some(value) = g.histogram.quantile(q).map(|ns| ns / 1e6) else {
                        continue;
                    };
                    let mut threshold = rule.threshold;
                    let held_key = (rule.name.clone(), g.labels.clone());
                    let base = match cache.held.get(&held_key) {
                        Some(held) => *held,
                        None => baselines.get(&g.labels).copied(),
                    };
                    if let (Some(base), Some(factor)) = (base, rule.factor) {
                        let t = base * factor;
                        threshold = Some(threshold.map_or(t, |fixed| fixed.max(t)));
                    }
                    let floor = rule.floor_ms.or_else(|| {
                        rule.baseline?;
                        let class = g.labels.get("class").and_then(|c| c.parse().ok());
                        Some(class.map_or(500.0, latency_floor_ms))
                    });
                    if let Some(floor) = floor {
                        threshold = Some(threshold.map_or(floor, |t| t.max(floor)));
                    }
                    let Some(threshold) = threshold else { continue };
                    let label = format!("p{}", (q * 100.0).round());
                    let usual = base
                        .map(|b| format!(", usually {}", fmt_ms(b)))
                        .unwrap_or_default();
                    if rule.baseline.is_some() && value > threshold {
                        cache.held.insert(held_key, base);
                    } else {
                        cache.held.remove(&held_key);
                    }
                    out.push(Observation {
                        summary: format!(
                            "{label} of {} is {} (threshold {}{usual}; {} calls in {})",
                            describe(&g.labels),
                            fmt_ms(value),
                            fmt_ms(threshold),
                            g.count,
                            fmt_window(window)
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
                    let statuses: Vec<String> = g
                        .by_status
                        .iter()
                        .filter(|(s, n)| **n > 0 && s.len() == 3 && s.starts_with('5'))
                        .map(|(s, n)| format!("{s} ×{n}"))
                        .collect();
                    let statuses = if statuses.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", statuses.join(", "))
                    };
                    out.push(Observation {
                        summary: format!(
                            "{what} of {} is {:.1} % ({bad} of {} in {}{statuses}; threshold {:.1} %)",
                            describe(&g.labels),
                            rate * 100.0,
                            g.count,
                            fmt_window(window),
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
            let counts = if window <= RECENT_WINDOW_MAX_S {
                store
                    .recent_flag_counts("full_scan_suspect", now_s - window)
                    .await?
            } else {
                store
                    .flag_counts("full_scan_suspect", window_start(now_s, window))
                    .await?
            };
            for f in counts {
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
        RuleKind::Metric => {
            out.extend(super::metric_rule::evaluate(store, rule, now_s, window).await?);
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
