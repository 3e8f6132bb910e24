//! The read API (JSON): services, spans, traces, aggregate series, OTLP metrics and logs,
//! databases, alerts and incidents. Times in query strings are RFC 3339
//! (`2026-11-25T08:15:00Z`) or Unix milliseconds; responses use Unix milliseconds for instants
//! and milliseconds for durations.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use stormwatch_model::{hexid, DependencyClass, Span};
use stormwatch_store::{AggregateFilter, AggregatePoint, ServiceSummary, SpanFilter};

use crate::error::AppError;
use crate::state::AppState;

/// Most spans one request returns.
pub const MAX_SPANS: i64 = 10_000;
/// Spans returned when `limit` is absent.
pub const DEFAULT_SPANS: i64 = 100;

/// Parses an instant: Unix milliseconds or RFC 3339. Returns milliseconds.
pub fn parse_time(field: &str, value: &str) -> Result<i64, AppError> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| {
            AppError::field(
                "bad_query",
                field,
                format!("`{v}` is neither Unix milliseconds nor RFC 3339: {e}"),
            )
        })
}

fn now_ms() -> i64 {
    stormwatch_model::now_ns() / 1_000_000
}

/// `from`/`to` with a default window ending now.
fn window(
    from: &Option<String>,
    to: &Option<String>,
    default_ms: i64,
) -> Result<(i64, i64), AppError> {
    let to = match to {
        Some(t) => parse_time("to", t)?,
        None => now_ms(),
    };
    let from = match from {
        Some(f) => parse_time("from", f)?,
        None => to - default_ms,
    };
    if from >= to {
        return Err(AppError::field(
            "bad_query",
            "from",
            "`from` must be before `to`",
        ));
    }
    Ok((from, to))
}

fn parse_class(class: &Option<String>) -> Result<Option<DependencyClass>, AppError> {
    class
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<DependencyClass>()
                .map_err(|e| AppError::field("bad_query", "class", e))
        })
        .transpose()
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
pub struct ServicesResponse {
    from: i64,
    to: i64,
    services: Vec<ServiceSummary>,
}

/// `GET /api/v1/services?from=&to=` (default: the last 24 hours).
pub async fn services(
    State(app): State<Arc<AppState>>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<ServicesResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 86_400_000)?;
    let services = app
        .store
        .services(from.div_euclid(1000), to.div_euclid(1000) + 1)
        .await
        .map_err(AppError::store)?;
    Ok(Json(ServicesResponse { from, to, services }))
}

#[derive(Debug, Deserialize)]
pub struct SpansQuery {
    service: Option<String>,
    class: Option<String>,
    peer: Option<String>,
    min_duration_ms: Option<f64>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct SpansResponse {
    from: i64,
    to: i64,
    spans: Vec<Span>,
}

/// `GET /api/v1/spans?service=&class=&peer=&min_duration_ms=&from=&to=&limit=` (default: the
/// last hour, 100 spans, newest first).
pub async fn spans(
    State(app): State<Arc<AppState>>,
    Query(q): Query<SpansQuery>,
) -> Result<Json<SpansResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 3_600_000)?;
    let limit = q.limit.unwrap_or(DEFAULT_SPANS);
    if !(1..=MAX_SPANS).contains(&limit) {
        return Err(AppError::field(
            "bad_query",
            "limit",
            format!("must be between 1 and {MAX_SPANS}"),
        ));
    }
    let min_duration_ms = q.min_duration_ms.unwrap_or(0.0);
    if !min_duration_ms.is_finite() || min_duration_ms < 0.0 {
        return Err(AppError::field(
            "bad_query",
            "min_duration_ms",
            "must be a non-negative number",
        ));
    }
    let filter = SpanFilter {
        service: non_empty(&q.service),
        class: parse_class(&q.class)?,
        peer: non_empty(&q.peer),
        min_duration_ns: (min_duration_ms * 1e6) as i64,
        from_ns: from.saturating_mul(1_000_000),
        to_ns: to.saturating_mul(1_000_000),
        limit,
    };
    let spans = app.store.spans(&filter).await.map_err(AppError::store)?;
    Ok(Json(SpansResponse { from, to, spans }))
}

#[derive(Serialize)]
pub struct TraceResponse {
    trace_id: String,
    spans: Vec<Span>,
}

/// `GET /api/v1/traces/{trace_id}` (32 hex digits).
pub async fn trace(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<TraceResponse>, AppError> {
    let bytes = hexid::decode(&id)
        .filter(|b| b.len() == 16)
        .ok_or_else(|| AppError::field("bad_query", "trace_id", "must be 32 hex digits"))?;
    let spans = app.store.trace(&bytes).await.map_err(AppError::store)?;
    if spans.is_empty() {
        return Err(AppError::not_found(format!(
            "no spans stored for trace {id}"
        )));
    }
    Ok(Json(TraceResponse {
        trace_id: hexid::encode(&bytes),
        spans,
    }))
}

#[derive(Debug, Deserialize)]
pub struct AggregatesQuery {
    service: Option<String>,
    class: Option<String>,
    peer: Option<String>,
    operation: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Seconds per point (a multiple of 60), or `1m`, `5m`, `1h`...
    step: Option<String>,
}

#[derive(Serialize)]
pub struct AggregatesResponse {
    from: i64,
    to: i64,
    step_seconds: i64,
    points: Vec<AggregatePoint>,
}

/// A step in the duration grammar of every config (`60`, `5m`, `1h`, `1h30m`…), in seconds:
/// a whole number of minutes.
/// A read's window (default: the last hour) and step (`parse`d, default about 60 points):
/// `(from_ms, to_ms, from_s, to_s, step_s)`, refused beyond the store's points per read.
fn stepped(
    from: &Option<String>,
    to: &Option<String>,
    step: &Option<String>,
    parse: fn(&str) -> Result<i64, AppError>,
) -> Result<(i64, i64, i64, i64, i64), AppError> {
    let (from, to) = window(from, to, 3_600_000)?;
    let (from_s, to_s) = (from.div_euclid(1000), (to + 999).div_euclid(1000));
    let step = match step {
        Some(s) => parse(s)?,
        None => (((to_s - from_s) / 60).div_euclid(60).max(1)) * 60,
    };
    if (to_s - from_s) / step > stormwatch_store::aggregates::MAX_POINTS {
        return Err(AppError::field(
            "bad_query",
            "step",
            "too many points: use a larger step or a shorter window",
        ));
    }
    Ok((from, to, from_s, to_s, step))
}

fn parse_step(step: &str) -> Result<i64, AppError> {
    let d = stormwatch_model::parse_duration(step)
        .map_err(|e| AppError::field("bad_query", "step", e.to_string()))?;
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if secs < 60 || secs % 60 != 0 || d.subsec_nanos() != 0 {
        return Err(AppError::field(
            "bad_query",
            "step",
            "must be a whole number of minutes (aggregates are per minute)",
        ));
    }
    Ok(secs)
}

/// `GET /api/v1/aggregates?service=&class=&peer=&operation=&from=&to=&step=`: count, error
/// rate and p50/p95/p99 per step, from the per-minute histograms (default: the last hour,
/// about 60 points).
pub async fn aggregates(
    State(app): State<Arc<AppState>>,
    Query(q): Query<AggregatesQuery>,
) -> Result<Json<AggregatesResponse>, AppError> {
    let (from, to, from_s, to_s, step) = stepped(&q.from, &q.to, &q.step, parse_step)?;
    let filter = AggregateFilter {
        service: non_empty(&q.service),
        class: parse_class(&q.class)?,
        peer: non_empty(&q.peer),
        operation: non_empty(&q.operation),
        from_s,
        to_s,
        step_s: step,
    };
    let points = app
        .store
        .aggregate_series(&filter)
        .await
        .map_err(AppError::store)?;
    Ok(Json(AggregatesResponse {
        from,
        to,
        step_seconds: step,
        points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps() {
        assert_eq!(
            parse_time("from", "1764058500000").unwrap(),
            1_764_058_500_000
        );
        assert_eq!(
            parse_time("from", "2025-11-25T08:15:00Z").unwrap(),
            1_764_058_500_000
        );
        assert_eq!(
            parse_time("from", "yesterday")
                .unwrap_err()
                .field
                .as_deref(),
            Some("from")
        );
        assert_eq!(parse_step("5m").unwrap(), 300);
        assert_eq!(parse_step("120").unwrap(), 120);
        assert!(parse_step("30s").is_err());
        assert!(parse_step("1w").is_err());
        // The config grammar: minutes spelled `min`, composites.
        assert_eq!(parse_step("1min").unwrap(), 60);
        assert_eq!(parse_step("1h30m").unwrap(), 5_400);
        assert!(parse_step("90s").is_err());
        assert!(parse_step("1m30s").is_err());
        assert_eq!(
            parse_step("-5m").unwrap_err().field.as_deref(),
            Some("step")
        ); // Metric steps round up to whole minutes.
        assert_eq!(parse_metric_step("1").unwrap(), 60);
        assert_eq!(parse_metric_step("90s").unwrap(), 120);
        assert_eq!(parse_metric_step("5m").unwrap(), 300);
        assert_eq!(parse_metric_step("500ms").unwrap(), 60);
        assert!(parse_metric_step("soon").is_err());
    }

    #[test]
    fn severities_by_number_or_name() {
        assert_eq!(parse_severity("13").unwrap(), 13);
        assert_eq!(parse_severity("warn").unwrap(), 13);
        assert_eq!(parse_severity("WARNING").unwrap(), 13);
        assert_eq!(parse_severity("Error").unwrap(), 17);
        assert_eq!(parse_severity("0").unwrap(), 0);
        for bad in ["25", "-1", "loud"] {
            assert_eq!(
                parse_severity(bad).unwrap_err().field.as_deref(),
                Some("severity")
            );
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    name: Option<String>,
    service: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Seconds per point, or `1m`, `5m`, `1h`...: rounded up to a whole number of minutes.
    step: Option<String>,
}

#[derive(Serialize)]
pub struct MetricsResponse {
    name: String,
    from: i64,
    to: i64,
    step_seconds: i64,
    /// At most [`stormwatch_store::metric_minutes::MAX_SERIES`], by service, instance and
    /// attributes; `truncated` when more matched.
    series: Vec<stormwatch_store::Series>,
    truncated: bool,
}

/// A metrics step: the duration grammar of [`parse_step`], rounded up to a whole number of
/// minutes (metric points are per minute), at least one.
fn parse_metric_step(step: &str) -> Result<i64, AppError> {
    let d = stormwatch_model::parse_duration(step)
        .map_err(|e| AppError::field("bad_query", "step", e.to_string()))?;
    let secs = i64::try_from(d.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(i64::from(d.subsec_nanos() > 0));
    Ok(secs.max(1).saturating_add(59) / 60 * 60)
}

/// `GET /api/v1/metrics?name=&service=&from=&to=&step=`: the series of OTLP metric `name`
/// (required), one point per step (default: the last hour, about 60 points).
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<MetricsResponse>, AppError> {
    let name = non_empty(&q.name).ok_or_else(|| {
        AppError::field(
            "bad_query",
            "name",
            "the metric's name is required (GET /api/v1/metrics/names lists them)",
        )
    })?;
    let (from, to, _, _, step) = stepped(&q.from, &q.to, &q.step, parse_metric_step)?;
    let found = app
        .store
        .metric_series(
            &name,
            non_empty(&q.service).as_deref(),
            from.saturating_mul(1_000_000),
            to.saturating_mul(1_000_000),
            step,
        )
        .await
        .map_err(AppError::store)?;
    Ok(Json(MetricsResponse {
        name,
        from,
        to,
        step_seconds: step,
        series: found.series,
        truncated: found.truncated,
    }))
}

#[derive(Debug, Deserialize)]
pub struct MetricNamesQuery {
    service: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
pub struct MetricNamesResponse {
    from: i64,
    to: i64,
    /// By name, at most [`stormwatch_store::metric_minutes::MAX_NAMES`].
    metrics: Vec<stormwatch_store::MetricName>,
}

/// `GET /api/v1/metrics/names?service=&from=&to=`: the metrics with data in the window
/// (default: the last hour), with kind, unit and number of series.
pub async fn metric_names(
    State(app): State<Arc<AppState>>,
    Query(q): Query<MetricNamesQuery>,
) -> Result<Json<MetricNamesResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 3_600_000)?;
    let metrics = app
        .store
        .metric_names(
            non_empty(&q.service).as_deref(),
            from.saturating_mul(1_000_000),
            to.saturating_mul(1_000_000),
        )
        .await
        .map_err(AppError::store)?;
    Ok(Json(MetricNamesResponse { from, to, metrics }))
}

/// Log records returned when `limit` is absent.
pub const DEFAULT_LOGS: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    trace_id: Option<String>,
    service: Option<String>,
    /// Least severity: an OTLP severity number (0–24) or a name (`warn`, `ERROR`...).
    severity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// A stored record and the name of its severity's range.
#[derive(Serialize)]
pub struct LogEntry {
    #[serde(flatten)]
    record: stormwatch_model::LogRecord,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL` or `UNSPECIFIED`.
    severity: &'static str,
}

#[derive(Serialize)]
pub struct LogsResponse {
    from: i64,
    to: i64,
    /// A trace's records oldest first; a service's newest first.
    logs: Vec<LogEntry>,
}

/// A least severity: a number from 0 to 24, or the name of a range (its lowest number:
/// `WARN` is 13), in any case; `WARNING`, `ERR` and `CRITICAL` are understood too.
fn parse_severity(v: &str) -> Result<i32, AppError> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i32>() {
        if (0..=24).contains(&n) {
            return Ok(n);
        }
        return Err(AppError::field(
            "bad_query",
            "severity",
            format!("{n} is not an OTLP severity number (0-24)"),
        ));
    }
    match v.to_ascii_uppercase().as_str() {
        "TRACE" => Ok(1),
        "DEBUG" => Ok(5),
        "INFO" => Ok(9),
        "WARN" | "WARNING" => Ok(13),
        "ERROR" | "ERR" => Ok(17),
        "FATAL" | "CRITICAL" => Ok(21),
        _ => Err(AppError::field(
            "bad_query",
            "severity",
            format!(
                "`{v}` is neither a severity number (0-24) nor one of TRACE, DEBUG, INFO, WARN, \
                 ERROR, FATAL"
            ),
        )),
    }
}

/// `GET /api/v1/logs?trace_id=` or `?service=&severity=`, with `from=&to=&limit=`: OTLP log
/// records of a trace (oldest first; every day kept unless `from` or `to` is given) or of a
/// service at a least severity (newest first; default: the last hour). 100 records by
/// default, at most 10,000.
pub async fn logs(
    State(app): State<Arc<AppState>>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogsResponse>, AppError> {
    use stormwatch_store::LogFilter;
    let limit = match q.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => DEFAULT_LOGS,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=stormwatch_store::logs::MAX_LOGS).contains(n))
            .ok_or_else(|| {
                AppError::field(
                    "bad_query",
                    "limit",
                    format!(
                        "must be a number between 1 and {}",
                        stormwatch_store::logs::MAX_LOGS
                    ),
                )
            })?,
    };
    let trace_id = non_empty(&q.trace_id);
    let service = non_empty(&q.service);
    let severity = non_empty(&q.severity);
    let (filter, (from, to)) = match (trace_id, service) {
        (Some(_), Some(_)) => {
            return Err(AppError::field(
                "bad_query",
                "service",
                "give either `trace_id` or `service`, not both",
            ))
        }
        (None, None) => {
            return Err(AppError::field(
                "bad_query",
                "service",
                "give `trace_id` (a trace's records) or `service` (a service's records)",
            ))
        }
        (Some(id), None) => {
            if severity.is_some() {
                return Err(AppError::field(
                    "bad_query",
                    "severity",
                    "`severity` filters a service's records: a trace's are all returned",
                ));
            }
            let bytes = hexid::decode(&id)
                .filter(|b| b.len() == 16)
                .ok_or_else(|| AppError::field("bad_query", "trace_id", "must be 32 hex digits"))?;
            // A trace is looked up over every day kept, as `/api/v1/traces/{id}` does.
            let window = if q.from.is_none() && q.to.is_none() {
                (0, now_ms() + 86_400_000)
            } else {
                window(&q.from, &q.to, 3_600_000)?
            };
            (LogFilter::Trace(bytes), window)
        }
        (None, Some(service)) => {
            let min_severity = severity.as_deref().map(parse_severity).transpose()?;
            (
                LogFilter::Service {
                    service,
                    min_severity: min_severity.unwrap_or(0),
                },
                window(&q.from, &q.to, 3_600_000)?,
            )
        }
    };
    let logs = app
        .store
        .logs(
            &filter,
            from.saturating_mul(1_000_000),
            to.saturating_mul(1_000_000),
            limit,
        )
        .await
        .map_err(AppError::store)?
        .into_iter()
        .map(|record| LogEntry {
            severity: stormwatch_model::log::severity_name(record.severity_number),
            record,
        })
        .collect();
    Ok(Json(LogsResponse { from, to, logs }))
}

#[derive(Serialize)]
pub struct DatabasesResponse {
    databases: Vec<stormwatch_store::probes::DatabaseSample>,
}

/// `GET /api/v1/databases`: the latest state of every probed database.
pub async fn databases(
    State(app): State<Arc<AppState>>,
) -> Result<Json<DatabasesResponse>, AppError> {
    let databases = app.store.databases().await.map_err(AppError::store)?;
    Ok(Json(DatabasesResponse { databases }))
}

#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct SamplesResponse {
    database: String,
    from: i64,
    to: i64,
    samples: Vec<stormwatch_store::probes::DatabaseSample>,
}

/// `GET /api/v1/databases/{name}/samples?from=&to=&limit=` (default: the last hour, at most
/// 10,000 samples, oldest first).
pub async fn database_samples(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<SamplesQuery>,
) -> Result<Json<SamplesResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 3_600_000)?;
    let limit = q.limit.unwrap_or(MAX_SPANS);
    if !(1..=MAX_SPANS).contains(&limit) {
        return Err(AppError::field(
            "bad_query",
            "limit",
            format!("must be between 1 and {MAX_SPANS}"),
        ));
    }
    let samples = app
        .store
        .database_samples(&name, from, to, limit)
        .await
        .map_err(AppError::store)?;
    Ok(Json(SamplesResponse {
        database: name,
        from,
        to,
        samples,
    }))
}

#[derive(Serialize)]
pub struct RulesResponse {
    /// Seconds between evaluations.
    evaluate_every: f64,
    /// The rules in force (defaults marked `"default": true`), as the evaluator runs them.
    rules: Vec<crate::alerts::config::RuleConfig>,
}

/// `GET /api/v1/rules`: the alert rules in force, after the last config reload.
pub async fn rules(State(app): State<Arc<AppState>>) -> Json<RulesResponse> {
    let config = app.alerts.config();
    Json(RulesResponse {
        evaluate_every: config.evaluate_every.as_secs_f64(),
        rules: config.rules.clone(),
    })
}

#[derive(Serialize)]
pub struct AlertsResponse {
    from: i64,
    to: i64,
    /// Instances pending, firing or resolving now (times in Unix seconds).
    active: Vec<stormwatch_store::alerts::AlertState>,
    /// Events (firing, resolved, renotify) in the window, newest first.
    history: Vec<stormwatch_store::alerts::EventRow>,
}

/// Most events `GET /api/v1/alerts` returns.
const MAX_ALERT_EVENTS: i64 = 1_000;

/// `GET /api/v1/alerts?from=&to=` (history default: the last 24 hours, at most 1,000 events).
pub async fn alerts(
    State(app): State<Arc<AppState>>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<AlertsResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 86_400_000)?;
    let (active, history) = tokio::try_join!(
        app.store.alert_states(),
        app.store
            .alert_events(from as f64 / 1000.0, to as f64 / 1000.0, MAX_ALERT_EVENTS),
    )
    .map_err(AppError::store)?;
    Ok(Json(AlertsResponse {
        from,
        to,
        active,
        history,
    }))
}

#[derive(Serialize)]
pub struct IncidentsResponse {
    from: i64,
    to: i64,
    /// Incidents open at some time in the window: open ones first, then newest first (times
    /// in Unix seconds), each with its alerts and ranked causes.
    incidents: Vec<stormwatch_store::incidents::Incident>,
}

/// `GET /api/v1/incidents?from=&to=` (default: the last 24 hours, at most 500 incidents).
pub async fn incidents(
    State(app): State<Arc<AppState>>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<IncidentsResponse>, AppError> {
    let (from, to) = window(&q.from, &q.to, 86_400_000)?;
    let incidents = app
        .store
        .incidents(from as f64 / 1000.0, to as f64 / 1000.0)
        .await
        .map_err(AppError::store)?;
    Ok(Json(IncidentsResponse {
        from,
        to,
        incidents,
    }))
}

/// `GET /api/v1/incidents/{id}`: one incident, its alerts and its ranked causes with their
/// evidence.
pub async fn incident(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<stormwatch_store::incidents::Incident>, AppError> {
    let id: i64 = id
        .parse()
        .map_err(|_| AppError::field("bad_query", "id", format!("`{id}` is not an incident id")))?;
    app.store
        .incident(id)
        .await
        .map_err(AppError::store)?
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no incident {id}")))
}
