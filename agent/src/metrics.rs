//! The agent's self-metrics: plain atomics, rendered as Prometheus text on `GET /metrics`
//! and summed into the cumulative [`AgentStats`] that rides along with every batch.
//!
//! Hand-rolled rather than a metrics registry: the label sets are closed enums, updates sit on
//! the per-span hot path, and a relaxed atomic add is the cheapest thing that stays correct.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use stormwatch_model::{AgentStats, KeepReason};

/// Why spans were lost (never shipped). Sampling is not loss: see `not_sampled`.
///
/// Two counters per reason: `spans_dropped` counts kept spans lost (refused spans count there
/// too), `aggregated_spans_dropped` counts received spans missing from the aggregates the
/// collector gets — refused before they were counted (`invalid`, `queue_full`), or counted
/// into the aggregates of a batch that was lost. So
/// `spans_received = aggregates stored by the collector + aggregated_spans_dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Refused by a receiver: malformed, invalid ids or timestamps, oversized values.
    Invalid,
    /// The receiver queue was full (the client got 429 / RESOURCE_EXHAUSTED).
    QueueFull,
    /// The spool was full and its oldest batches were deleted.
    SpoolFull,
    /// The collector answered 400: the batch can never be stored (kept as a dead letter).
    Rejected,
    /// The collector answered 413 to a batch too small to split (kept as a dead letter).
    TooLarge,
    /// A spooled file could not be read back (quarantined).
    SpoolCorrupt,
    /// The batch could not be written to the spool (I/O error, disk full) or encoded.
    SpoolWrite,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Invalid,
        DropReason::QueueFull,
        DropReason::SpoolFull,
        DropReason::Rejected,
        DropReason::TooLarge,
        DropReason::SpoolCorrupt,
        DropReason::SpoolWrite,
    ];
    fn as_str(self) -> &'static str {
        match self {
            DropReason::Invalid => "invalid",
            DropReason::QueueFull => "queue_full",
            DropReason::SpoolFull => "spool_full",
            DropReason::Rejected => "rejected",
            DropReason::TooLarge => "too_large",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::SpoolWrite => "spool_write",
        }
    }
}

/// The sampler bound that made it let waiting spans go before their trace's window ended
/// (memory pressure), as opposed to a window that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// `sampling.max_held_bytes`.
    HeldBytes,
    /// `sampling.max_pending_spans`.
    PendingSpans,
}

impl Pressure {
    pub const ALL: [Pressure; 2] = [Pressure::HeldBytes, Pressure::PendingSpans];
    fn as_str(self) -> &'static str {
        match self {
            Pressure::HeldBytes => "held_bytes",
            Pressure::PendingSpans => "pending_spans",
        }
    }
}

/// Upper bounds of the ship-latency histogram buckets, seconds.
const LATENCY_BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// All counters. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Spans received, by receiver: otlp_http, otlp_grpc, zipkin.
    received: [AtomicU64; 3],
    /// Requests refused because the queue was full.
    pub throttled_requests: AtomicU64,
    /// NUL characters replaced by U+FFFD in received spans (PostgreSQL cannot store them).
    pub replaced_nuls: AtomicU64,
    /// Spans counted in an overflow aggregate row (`aggregates::MAX_KEYS_PER_MINUTE`).
    pub aggregate_overflow: AtomicU64,
    /// Dependency calls whose server span never came (`pipeline::entries`).
    pub unattributed_calls: AtomicU64,
    /// OTLP metric points received; dropped: over the series cap, or invalid.
    pub metric_points_received: AtomicU64,
    pub metric_points_dropped: AtomicU64,
    /// OTLP log records received; filtered (below WARN without a trace id, by design);
    /// dropped (queue full, invalid).
    pub log_records_received: AtomicU64,
    pub log_records_filtered: AtomicU64,
    pub log_records_dropped: AtomicU64,
    kept: [AtomicU64; 4],
    dropped: [AtomicU64; DropReason::ALL.len()],
    aggregated_dropped: [AtomicU64; DropReason::ALL.len()],
    /// Spans the sampler let go (they still count in aggregates).
    pub not_sampled: AtomicU64,
    /// The part of `not_sampled` let go under pressure, by [`Pressure`].
    pressure_evicted: [AtomicU64; Pressure::ALL.len()],
    /// What the sampler holds for waiting traces (`Sampler::held_bytes`), and the kept traces
    /// it remembers; gauges updated at each expiry pass and eviction.
    pub sampler_held_bytes: AtomicU64,
    pub sampler_kept_traces: AtomicU64,
    /// Kept traces forgotten before their window ended because more than
    /// `sampler::MAX_KEPT_TRACES` were remembered.
    pub kept_traces_forgotten: AtomicU64,
    /// Batches built / shipped / failed attempts.
    pub batches_built: AtomicU64,
    pub batches_shipped: AtomicU64,
    pub ship_failures: AtomicU64,
    /// Current spool size on disk, bytes, and batch files.
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
    /// Batch writes to the spool that failed (disk full, I/O error).
    pub spool_write_errors: AtomicU64,
    /// Spool files found corrupt and moved to the quarantine folder.
    pub spool_quarantined: AtomicU64,
    /// Batches moved to the dead-letter folder (refused for good by the collector).
    pub dead_letter_batches: AtomicU64,
    /// Batch files and bytes held in the dead-letter folder now.
    pub dead_letter_files: AtomicU64,
    pub dead_letter_bytes: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Config reloads: applied / rejected.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// Which receiver a span came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    OtlpHttp,
    OtlpGrpc,
    Zipkin,
}

impl Receiver {
    fn as_str(self) -> &'static str {
        match self {
            Receiver::OtlpHttp => "otlp_http",
            Receiver::OtlpGrpc => "otlp_grpc",
            Receiver::Zipkin => "zipkin",
        }
    }
    const ALL: [Receiver; 3] = [Receiver::OtlpHttp, Receiver::OtlpGrpc, Receiver::Zipkin];
}

impl Metrics {
    pub fn received(&self, r: Receiver, n: u64) {
        self.received[r as usize].fetch_add(n, Relaxed);
    }
    pub fn kept(&self, reason: KeepReason, n: u64) {
        self.kept[reason as usize].fetch_add(n, Relaxed);
    }
    /// Waiting spans the sampler let go under pressure: not sampled, and counted apart.
    pub fn pressure_evicted(&self, bound: Pressure, n: u64) {
        self.not_sampled.fetch_add(n, Relaxed);
        self.pressure_evicted[bound as usize].fetch_add(n, Relaxed);
    }
    pub fn pressure_evicted_count(&self, bound: Pressure) -> u64 {
        self.pressure_evicted[bound as usize].load(Relaxed)
    }
    /// Kept spans lost; callers say what happened to their aggregates through
    /// [`Metrics::refused`] or [`Metrics::batch_dropped`].
    fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }
    /// Spans refused before they were counted in any aggregate: lost from both.
    pub fn refused(&self, reason: DropReason, n: u64) {
        self.dropped(reason, n);
        self.aggregated_dropped[reason as usize].fetch_add(n, Relaxed);
    }
    /// A batch lost: its kept spans, and the spans its aggregates counted.
    pub fn batch_dropped(&self, reason: DropReason, spans: u64, aggregated: u64) {
        self.dropped(reason, spans);
        self.aggregated_dropped[reason as usize].fetch_add(aggregated, Relaxed);
    }
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }
    pub fn aggregated_dropped_count(&self, reason: DropReason) -> u64 {
        self.aggregated_dropped[reason as usize].load(Relaxed)
    }
    pub fn kept_count(&self, reason: KeepReason) -> u64 {
        self.kept[reason as usize].load(Relaxed)
    }
    pub fn received_total(&self) -> u64 {
        self.received.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Records one successful POST's latency.
    pub fn ship_latency(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (i, b) in LATENCY_BOUNDS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Cumulative counters for the collector.
    pub fn stats(&self) -> AgentStats {
        AgentStats {
            spans_received: self.received_total(),
            spans_kept: self.kept.iter().map(|c| c.load(Relaxed)).sum(),
            spans_dropped: self.dropped.iter().map(|c| c.load(Relaxed)).sum(),
            spool_bytes: self.spool_bytes.load(Relaxed),
            spans_lost: self
                .aggregated_dropped
                .iter()
                .map(|c| c.load(Relaxed))
                .sum(),
            dead_letter_batches: self.dead_letter_batches.load(Relaxed),
            metric_points_dropped: self.metric_points_dropped.load(Relaxed),
            log_records_dropped: self.log_records_dropped.load(Relaxed),
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let counter = |o: &mut String, name: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let rows = Receiver::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{receiver=\"{}\"}}", r.as_str()),
                    self.received[*r as usize].load(Relaxed),
                )
            })
            .collect::<Vec<_>>();
        counter(
            &mut o,
            "stormwatch_agent_spans_received_total",
            "Spans received from apps.",
            &rows,
        );
        let rows = [
            KeepReason::Sampled,
            KeepReason::Slow,
            KeepReason::Error,
            KeepReason::Forced,
        ]
        .iter()
        .map(|r| {
            (
                format!("{{reason=\"{}\"}}", r.as_str()),
                self.kept_count(*r),
            )
        })
        .collect::<Vec<_>>();
        counter(
            &mut o,
            "stormwatch_agent_spans_kept_total",
            "Spans kept by the sampler, by reason (forced = kept with its trace).",
            &rows,
        );
        let rows = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.as_str()),
                    self.dropped_count(*r),
                )
            })
            .collect::<Vec<_>>();
        counter(
            &mut o,
            "stormwatch_agent_spans_dropped_total",
            "Spans lost before reaching the collector, by reason.",
            &rows,
        );
        let rows = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.as_str()),
                    self.aggregated_dropped_count(*r),
                )
            })
            .collect::<Vec<_>>();
        counter(
            &mut o,
            "stormwatch_agent_aggregated_spans_dropped_total",
            "Received spans missing from the aggregates shipped: refused before counting, or counted into a batch that was lost, by reason.",
            &rows,
        );
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
        counter(
            &mut o,
            "stormwatch_agent_spans_not_sampled_total",
            "Spans counted in aggregates but not shipped by the sampler.",
            &one(&self.not_sampled),
        );
        let rows = Pressure::ALL
            .iter()
            .map(|b| {
                (
                    format!("{{bound=\"{}\"}}", b.as_str()),
                    self.pressure_evicted_count(*b),
                )
            })
            .collect::<Vec<_>>();
        counter(
            &mut o,
            "stormwatch_agent_sampler_pressure_evicted_spans_total",
            "Waiting spans the sampler let go before their trace's window ended because it reached a bound (sampling.max_held_bytes, sampling.max_pending_spans): part of spans_not_sampled_total, the rest expired with their window.",
            &rows,
        );
        counter(
            &mut o,
            "stormwatch_agent_sampler_kept_traces_forgotten_total",
            "Kept traces forgotten before their window ended, the sampler remembering too many; their later spans were sampled on their own.",
            &one(&self.kept_traces_forgotten),
        );
        counter(
            &mut o,
            "stormwatch_agent_throttled_requests_total",
            "Requests answered 429 / RESOURCE_EXHAUSTED because the queue was full.",
            &one(&self.throttled_requests),
        );
        counter(
            &mut o,
            "stormwatch_agent_replaced_nul_characters_total",
            "NUL characters in received spans replaced by U+FFFD (PostgreSQL cannot store NUL).",
            &one(&self.replaced_nuls),
        );
        counter(
            &mut o,
            "stormwatch_agent_aggregate_overflow_spans_total",
            "Spans counted in their service's overflow aggregate row: past 5,000 distinct keys a minute, peer and operation read (overflow).",
            &one(&self.aggregate_overflow),
        );
        counter(
            &mut o,
            "stormwatch_agent_unattributed_calls_total",
            "Dependency calls not counted under a server operation: no server span of their service and trace arrived within 30 s (background work, or a caller that is not traced). They are in the aggregates.",
            &one(&self.unattributed_calls),
        );
        counter(
            &mut o,
            "stormwatch_agent_metric_points_received_total",
            "OTLP metric data points received.",
            &one(&self.metric_points_received),
        );
        counter(
            &mut o,
            "stormwatch_agent_metric_points_dropped_total",
            "OTLP metric data points not kept: invalid, or of a new series past limits.max_metric_series.",
            &one(&self.metric_points_dropped),
        );
        counter(
            &mut o,
            "stormwatch_agent_log_records_received_total",
            "OTLP log records received.",
            &one(&self.log_records_received),
        );
        counter(
            &mut o,
            "stormwatch_agent_log_records_filtered_total",
            "OTLP log records not kept by design: below WARN and without a trace id.",
            &one(&self.log_records_filtered),
        );
        counter(
            &mut o,
            "stormwatch_agent_log_records_dropped_total",
            "OTLP log records lost: invalid, or refused with 429 while the agent held 50,000 records or 8 MiB of them.",
            &one(&self.log_records_dropped),
        );
        counter(
            &mut o,
            "stormwatch_agent_batches_built_total",
            "Batches built.",
            &one(&self.batches_built),
        );
        counter(
            &mut o,
            "stormwatch_agent_batches_shipped_total",
            "Batches the collector accepted.",
            &one(&self.batches_shipped),
        );
        counter(
            &mut o,
            "stormwatch_agent_ship_failures_total",
            "Failed POSTs to the collector (each retried unless rejected).",
            &one(&self.ship_failures),
        );
        counter(
            &mut o,
            "stormwatch_agent_config_reloads_total",
            "Config reloads applied.",
            &one(&self.reloads_ok),
        );
        counter(
            &mut o,
            "stormwatch_agent_config_reload_failures_total",
            "Config reloads rejected (old config kept).",
            &one(&self.reloads_failed),
        );
        let _ = writeln!(o, "# HELP stormwatch_agent_sampler_held_bytes Bytes the sampler holds for traces waiting for a decision (bounded by sampling.max_held_bytes).\n# TYPE stormwatch_agent_sampler_held_bytes gauge\nstormwatch_agent_sampler_held_bytes {}", self.sampler_held_bytes.load(Relaxed));
        let _ = writeln!(o, "# HELP stormwatch_agent_sampler_kept_traces Kept traces the sampler remembers, to keep their later spans.\n# TYPE stormwatch_agent_sampler_kept_traces gauge\nstormwatch_agent_sampler_kept_traces {}", self.sampler_kept_traces.load(Relaxed));
        let _ = writeln!(o, "# HELP stormwatch_agent_spool_bytes Bytes in the disk spool.\n# TYPE stormwatch_agent_spool_bytes gauge\nstormwatch_agent_spool_bytes {}", self.spool_bytes.load(Relaxed));
        let _ = writeln!(o, "# HELP stormwatch_agent_spool_batches Batches in the disk spool.\n# TYPE stormwatch_agent_spool_batches gauge\nstormwatch_agent_spool_batches {}", self.spool_batches.load(Relaxed));
        counter(
            &mut o,
            "stormwatch_agent_spool_write_errors_total",
            "Batch writes to the spool that failed (disk full, I/O error); when_full decides what follows.",
            &one(&self.spool_write_errors),
        );
        counter(
            &mut o,
            "stormwatch_agent_spool_quarantined_total",
            "Spool files found corrupt (short, bad magic, length or checksum) and moved to the quarantine folder.",
            &one(&self.spool_quarantined),
        );
        counter(
            &mut o,
            "stormwatch_agent_dead_letter_batches_total",
            "Batches the collector refused for good (400, or 413 and too small to split), moved to the dead-letter folder.",
            &one(&self.dead_letter_batches),
        );
        let _ = writeln!(o, "# HELP stormwatch_agent_dead_letter_files Batches held in the dead-letter folder.\n# TYPE stormwatch_agent_dead_letter_files gauge\nstormwatch_agent_dead_letter_files {}", self.dead_letter_files.load(Relaxed));
        let _ = writeln!(o, "# HELP stormwatch_agent_dead_letter_bytes Bytes held in the dead-letter folder.\n# TYPE stormwatch_agent_dead_letter_bytes gauge\nstormwatch_agent_dead_letter_bytes {}", self.dead_letter_bytes.load(Relaxed));
        let name = "stormwatch_agent_ship_latency_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Latency of successful POSTs to the collector.\n# TYPE {name} histogram"
        );
        for (i, b) in LATENCY_BOUNDS.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Metrics::default();
        m.received(Receiver::Zipkin, 3);
        m.kept(KeepReason::Slow, 2);
        m.batch_dropped(DropReason::SpoolFull, 5, 40);
        m.ship_latency(std::time::Duration::from_millis(20));
        m.pressure_evicted(Pressure::HeldBytes, 4);
        let t = m.render();
        assert!(
            t.contains(
                "stormwatch_agent_sampler_pressure_evicted_spans_total{bound=\"held_bytes\"} 4"
            ),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_spans_not_sampled_total 4"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_spans_received_total{receiver=\"zipkin\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_spans_kept_total{reason=\"slow\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_spans_dropped_total{reason=\"spool_full\"} 5"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_aggregated_spans_dropped_total{reason=\"spool_full\"} 40"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_ship_latency_seconds_bucket{le=\"0.025\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("stormwatch_agent_ship_latency_seconds_bucket{le=\"0.01\"} 0"),
            "{t}"
        );
        let s = m.stats();
        assert_eq!((s.spans_received, s.spans_kept, s.spans_dropped), (3, 2, 5));
    }
}
