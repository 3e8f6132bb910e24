//! The `metric` rule kind: an OTLP metric series an app exports, against a threshold in its
//! unit, or as a percentage of another series (`ratio_to`): the pool's connections in use of
//! its maximum, the requests in flight of the limiter's limit. Reads the per-minute series
//! points the agents ship (`sw_metric_minutes`), the current minute included: its value is
//! updated at every export of the app, so the rule sees a change within one export interval.

use stormwatch_model::MetricKind;
use stormwatch_store::signals::Labels;
use stormwatch_store::{Series, Store, StoreError};

use super::config::{Reduce, RuleConfig};
use super::observation::Observation;

/// How `series` reads over the window, by the rule's `reduce` or the default of its kind.
fn reduce(s: &Series, how: Option<Reduce>, window_s: f64) -> Option<f64> {
    let how = how.unwrap_or(match s.kind {
        MetricKind::Counter => Reduce::Rate,
        MetricKind::Histogram => Reduce::P95,
        _ => Reduce::Last,
    });
    let latest = s.points.iter().max_by_key(|p| p.t)?;
    match how {
        Reduce::Last => latest.value,
        Reduce::Max => s
            .points
            .iter()
            .filter_map(|p| p.max.or(p.value))
            .max_by(f64::total_cmp),
        Reduce::Mean => {
            let values: Vec<f64> = s.points.iter().filter_map(|p| p.value).collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        }
        Reduce::Rate => {
            let increase: f64 = s.points.iter().filter_map(|p| p.value).sum();
            Some(increase / window_s.max(1.0))
        }
        Reduce::P95 => latest.p95.or(latest.value),
    }
}

fn attributes_text(s: &Series) -> String {
    s.attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Measures every series of `rule` at `now_s`.
pub async fn evaluate(
    store: &Store,
    rule: &RuleConfig,
    now_s: f64,
    window_s: f64,
) -> Result<Vec<Observation>, StoreError> {
    let Some(name) = rule.series.as_deref() else {
        return Ok(Vec::new());
    };
    let threshold = rule.threshold.unwrap_or(f64::INFINITY);
    let to_ns = (now_s * 1e9) as i64;
    let from_ns = to_ns - (window_s * 1e9) as i64;
    // One step over the whole window: the store rounds it to whole minutes, so the window's
    // minutes come as one or two points per series.
    let step = (window_s.ceil() as i64).max(60);
    let service = rule.service.as_deref();
    let found = store
        .metric_series(name, service, from_ns, to_ns, step)
        .await?;
    let wanted = |s: &Series| {
        rule.attributes
            .iter()
            .flatten()
            .all(|(k, v)| s.attributes.get(k) == Some(v))
    };
    let limits = match &rule.ratio_to {
        Some(other) => Some(
            store
                .metric_series(other, service, from_ns, to_ns, step)
                .await?
                .series,
        ),
        None => None,
    };
    let mut out = Vec::new();
    for s in found.series.iter().filter(|s| wanted(s)) {
        let Some(v) = reduce(s, rule.reduce, window_s) else {
            continue;
        };
        let what = match attributes_text(s) {
            a if a.is_empty() => format!("{name} of {}", s.service),
            a => format!("{name} of {} ({a})", s.service),
        };
        let (value, summary) = match (&limits, &rule.ratio_to) {
            (Some(limits), Some(other)) => {
                // The limit of the same service and instance whose attributes the series
                // shares (the pool's max carries `pool.name`, its usage also `state`).
                let limit = limits.iter().find(|l| {
                    l.service == s.service
                        && l.instance == s.instance
                        && l.attributes
                            .iter()
                            .all(|(k, v)| s.attributes.get(k).is_none_or(|x| x == v))
                });
                let Some(of) = limit.and_then(|l| reduce(l, Some(Reduce::Last), window_s)) else {
                    continue;
                };
                if of <= 0.0 {
                    continue;
                }
                let pct = v / of * 100.0;
                (
                    pct,
                    format!(
                        "{what} is {pct:.0} % of {other} ({} of {}; threshold {} %)",
                        number(v),
                        number(of),
                        number(threshold)
                    ),
                )
            }
            _ => (
                v,
                format!(
                    "{what} is {}{} (threshold {})",
                    number(v),
                    match s.unit.as_str() {
                        "" | "1" => String::new(),
                        u if u.starts_with('{') => String::new(),
                        u => format!(" {u}"),
                    },
                    number(threshold)
                ),
            ),
        };
        let mut labels: Labels = s.attributes.clone();
        labels.insert("service".into(), s.service.clone());
        labels.insert("instance".into(), s.instance.clone());
        if let Some(g) = &rule.group_by {
            labels.retain(|k, _| g.contains(k));
        }
        out.push(Observation {
            summary,
            labels,
            value: Some(value),
            threshold: Some(threshold),
            active: value >= threshold,
        });
    }
    // Series told apart only by labels the rule does not group by: the worst one speaks.
    out.sort_by(|a, b| {
        a.labels
            .cmp(&b.labels)
            .then(b.value.unwrap_or(0.0).total_cmp(&a.value.unwrap_or(0.0)))
    });
    out.dedup_by(|later, first| later.labels == first.labels);
    Ok(out)
}
