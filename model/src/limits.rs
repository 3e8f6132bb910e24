//! Every limit the wire model enforces, in one place. Documented in README.md ("Limits").
//!
//! A value over a *truncation* limit is cut at a character boundary and ends with
//! [`TRUNCATION_MARKER`]; the batch is still accepted and the cut is counted. A value over a
//! *rejection* limit fails the whole batch with a 400 that names the field.

/// Appended to a truncated value.
pub const TRUNCATION_MARKER: &str = "…";

/// Labels (service, instance, operation, peer, db system, host, database...): truncated.
pub const MAX_LABEL_BYTES: usize = 256;
/// Normalized statements: truncated.
pub const MAX_STATEMENT_BYTES: usize = 4096;
/// Status and failure messages: truncated.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Attribute keys: truncated.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 128;
/// Attribute values: truncated.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// Attributes per span: the rest are dropped and counted in
/// [`DROPPED_ATTRIBUTES_KEY`].
pub const MAX_ATTRIBUTES: usize = 64;
/// Attribute that records how many attributes were dropped from a span.
pub const DROPPED_ATTRIBUTES_KEY: &str = "stormwatch.dropped_attributes";

/// Agent id and instance: rejected when longer or empty.
pub const MAX_AGENT_ID_BYTES: usize = 128;
/// Spans in one batch: rejected beyond.
pub const MAX_SPANS_PER_BATCH: usize = 100_000;
/// Aggregates in one batch: rejected beyond.
pub const MAX_AGGREGATES_PER_BATCH: usize = 100_000;
/// Host and probe samples in one batch, each: rejected beyond.
pub const MAX_SAMPLES_PER_BATCH: usize = 10_000;
/// Metric points in one batch: rejected beyond.
pub const MAX_METRIC_POINTS_PER_BATCH: usize = 100_000;
/// Log records in one batch: rejected beyond.
pub const MAX_LOGS_PER_BATCH: usize = 100_000;
/// Attributes of a metric series (they name it): the rest are dropped.
pub const MAX_METRIC_ATTRIBUTES: usize = 16;
/// Attributes of a log record: the rest are dropped and counted like a span's.
pub const MAX_LOG_ATTRIBUTES: usize = 32;
/// A log record's body: truncated.
pub const MAX_LOG_BODY_BYTES: usize = 8192;
/// Buckets in one histogram: rejected beyond (1 ns..10⁴ s needs ~1,500).
pub const MAX_HISTOGRAM_BUCKETS: usize = 4_096;

/// Earliest accepted timestamp: 2000-01-01T00:00:00Z, in ns.
pub const MIN_TIME_NS: i64 = 946_684_800 * 1_000_000_000;
/// Latest accepted timestamp, relative to the receiver's clock: one day ahead.
pub const MAX_FUTURE_NS: i64 = 86_400 * 1_000_000_000;
/// Longest accepted span duration: one day.
pub const MAX_DURATION_NS: i64 = 86_400 * 1_000_000_000;

/// Default largest ingest request body as sent (compressed): 16 MiB. Collectors may be
/// configured lower (`max_body_bytes`); agents keep batches under it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default largest ingest request body after decompression: 64 MiB (`max_decompressed_bytes`).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
