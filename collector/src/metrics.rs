//! The collector's own metrics, served at `GET /metrics` in Prometheus text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelResult {
    pub channel: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Every counter and histogram the collector exposes.
pub struct Metrics {
    registry: Registry,
    /// Batches by result: stored, duplicate.
    pub batches: Family<ResultLabel, Counter>,
    pub spans: Counter,
    /// Spans older than the retention window, not stored.
    pub spans_expired: Counter,
    /// Spans counted by aggregates older than the retention window, not stored.
    pub aggregated_spans_expired: Counter,
    /// Requests rejected, by reason (unauthorized, forbidden, too_large, malformed, invalid...).
    pub rejected: Family<ReasonLabel, Counter>,
    /// Values truncated or attributes dropped by validation.
    pub truncated: Family<KindLabel, Counter>,
    /// Seconds from request received to batch committed.
    pub ingest_seconds: Histogram,
    pub db_errors: Counter,
    /// Alert notifications by channel and result (sent, retried, failed).
    pub notifications: Family<ChannelResult, Counter>,
    /// 1 while this collector is the alert leader.
    pub alert_leader: Gauge,
    /// Completed alert evaluations.
    pub alert_evaluations: Counter,
    /// Rows of recent aggregates the alert leader read into its cache.
    pub alert_recent_rows: Counter,
    /// Notifications recorded as failed for good, as last counted in the database.
    pub alert_deliveries_failed: Gauge,
    /// Config file reloads by result: applied, rejected (a broken edit), unreadable.
    pub config_reloads: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stormwatch_collector");
        let batches = Family::<ResultLabel, Counter>::default();
        let spans = Counter::default();
        let spans_expired = Counter::default();
        let aggregated_spans_expired = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let truncated = Family::<KindLabel, Counter>::default();
        let ingest_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let db_errors = Counter::default();
        let notifications = Family::<ChannelResult, Counter>::default();
        let alert_leader = Gauge::default();
        let alert_evaluations = Counter::default();
        let alert_recent_rows = Counter::default();
        let alert_deliveries_failed = Gauge::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Config file reloads after an edit, by result (applied, rejected, unreadable)",
            config_reloads.clone(),
        );
        registry.register(
            "alert_notifications",
            "Alert notifications by channel and result",
            notifications.clone(),
        );
        registry.register(
            "alert_leader",
            "1 while this collector evaluates alerts",
            alert_leader.clone(),
        );
        registry.register(
            "alert_evaluations",
            "Alert evaluation rounds completed",
            alert_evaluations.clone(),
        );
        registry.register(
            "alert_recent_rows",
            "Rows of recent aggregates the alert leader read: what committed since its last round, and its rules' whole windows when its cache is built anew (once a minute)",
            alert_recent_rows.clone(),
        );
        registry.register(
            "alert_deliveries_failed",
            "Alert notifications that failed for good (all collectors)",
            alert_deliveries_failed.clone(),
        );
        registry.register(
            "batches",
            "Batches received, by result (stored, duplicate)",
            batches.clone(),
        );
        registry.register("spans_ingested", "Spans stored", spans.clone());
        registry.register(
            "spans_expired",
            "Spans older than the retention window, not stored",
            spans_expired.clone(),
        );
        registry.register(
            "aggregated_spans_expired",
            "Spans counted by aggregates older than the retention window, not stored",
            aggregated_spans_expired.clone(),
        );
        registry.register(
            "rejected",
            "Ingest requests rejected, by reason",
            rejected.clone(),
        );
        registry.register(
            "truncated",
            "Values truncated (values) or attributes dropped (attributes) by validation",
            truncated.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Time from request to committed batch",
            ingest_seconds.clone(),
        );
        registry.register("db_errors", "Database errors", db_errors.clone());
        Metrics {
            registry,
            batches,
            spans,
            spans_expired,
            aggregated_spans_expired,
            rejected,
            truncated,
            ingest_seconds,
            db_errors,
            notifications,
            alert_leader,
            alert_evaluations,
            alert_recent_rows,
            alert_deliveries_failed,
            config_reloads,
        }
    }

    pub fn notification(&self, channel: &str, result: &str, n: usize) {
        self.notifications
            .get_or_create(&ChannelResult {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(n as u64);
    }

    pub fn config_reload(&self, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
