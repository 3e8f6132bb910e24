//! Storing one agent batch: one transaction, at most once per (agent, instance, sequence).
//!
//! [`Store::store_batch`] writes the batch one table at a time, all in one transaction and
//! always in this order: the claim (`sw_batches`), the spans (binary COPY into `sw_spans`),
//! then the rows of this agent alone and the appends: host and probe samples and their
//! rollups, the agent's counters (`sw_agents`, `sw_agent_stats`), versions, calls per instance
//! (`sw_instance_minutes`), OTLP metric points (`sw_metric_minutes`, merged per series and
//! minute), log records (`sw_logs`), the recent aggregates (`sw_recent_aggregates`), the
//! aggregates (`sw_aggregates`, merged per key, appended and compacted later: `compaction.rs`)
//! and the rollup deltas (`rollups.rs`, appended and folded later); last the rows every agent
//! of a service shares, so the transaction holds their locks for as short a time as it can:
//! calls per server operation (`sw_entry_calls`) and flag counts (`sw_flag_counts`), each
//! upserted in key order.
//! Rows locked in the same order by every batch cannot deadlock.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use postgres_types::{Json, ToSql, Type};
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{
    Aggregate, Batch, BorrowedBatch, DbRole, DependencyClass, FailureClass, Histogram, KeepReason,
    SpanKind, SpanRef, SpanStatus,
};

use crate::aggregates::AggregateRow;
use crate::attr_dicts::PackedAttributes;
use crate::copy::{timestamp, CopyIn};
use crate::histogram_codec::counts_i64;
use crate::labels::{self, BatchLabels, LabelKind};
use crate::partitions::day_of_ns;
use crate::recent::COUNTED_FLAGS;
use crate::{name, rollups, saturating_i64, Store, StoreError};

/// What storing a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The batch had been stored before; nothing was written.
    pub duplicate: bool,
    pub spans: u64,
    /// Spans older than the retention window: not stored.
    pub expired_spans: u64,
    /// Spans counted by aggregates older than the retention window, which are not stored
    /// either: counted like expired spans, so no count is lost without a trace.
    pub expired_aggregated_spans: u64,
    pub aggregates: u64,
    pub samples: u64,
    /// Rows of `sw_metric_minutes` written: metric points merged per series and minute.
    pub metric_points: u64,
    pub logs: u64,
}

/// Columns of `sw_spans` in COPY order, with their types: the compact layout of migration
/// 0022 (labels as ids into `sw_labels`, enums as wire numbers, attributes compressed).
pub(crate) const SPAN_COLUMNS: &[(&str, Type)] = &[
    ("start_ns", Type::INT8),
    ("duration_ns", Type::INT8),
    ("trace_id", Type::BYTEA),
    ("span_id", Type::BYTEA),
    ("parent_span_id", Type::BYTEA),
    ("service_id", Type::INT4),
    ("instance_id", Type::INT4),
    ("operation_id", Type::INT4),
    ("kind_no", Type::INT2),
    ("class_no", Type::INT2),
    ("is_error", Type::BOOL),
    ("status_message", Type::TEXT),
    ("http_status", Type::INT2),
    ("peer_id", Type::INT4),
    ("db_system_id", Type::INT4),
    ("db_role_no", Type::INT2),
    ("statement_id", Type::INT4),
    ("rows", Type::INT8),
    ("attrs_dict", Type::INT2),
    ("attrs", Type::BYTEA),
    ("kept_no", Type::INT2),
    ("flags", Type::INT4),
    ("replica_lag_ms", Type::INT8),
];

/// The wire number of an enum as stored (smallint), an unknown number as `fallback`'s.
fn number<E: WireEnum>(n: i32, fallback: E) -> i16 {
    E::from_number(n).unwrap_or(fallback).number() as i16
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Spans ready for [`copy_spans`]: their labels' ids and their attributes compressed, both
/// found before the batch's transaction ([`Store::encode_spans`]).
pub struct EncodedSpans<'a> {
    spans: Vec<&'a SpanRef<'a>>,
    labels: BatchLabels<'a>,
    attrs: PackedAttributes,
}

impl Store {
    /// Resolves the labels of `spans` to ids (inserting new ones into `sw_labels`, each in a
    /// short statement of its own) and compresses their attributes. Call it before opening
    /// the transaction [`copy_spans`] writes in.
    pub async fn encode_spans<'a>(
        &self,
        spans: impl Iterator<Item = &'a SpanRef<'a>>,
    ) -> Result<EncodedSpans<'a>, StoreError> {
        let spans: Vec<&'a SpanRef<'a>> = spans.collect();
        let labels = self
            .resolve_labels(spans.iter().flat_map(|s| {
                [
                    (LabelKind::Service, &*s.service),
                    (LabelKind::Instance, &*s.instance),
                    (LabelKind::Operation, &*s.operation),
                    (LabelKind::Peer, &*s.peer),
                    (LabelKind::DbSystem, &*s.db_system),
                    (LabelKind::Statement, &*s.statement),
                ]
            }))
            .await?;
        let attrs = self
            .attr_encoder(&spans)
            .await?
            .compress(spans.iter().copied())?;
        Ok(EncodedSpans {
            spans,
            labels,
            attrs,
        })
    }
}

/// Writes `spans` with binary COPY into `sw_spans` (routed to their daily partitions).
/// Public so the benchmark can measure the raw COPY ceiling with the very same encoding.
pub async fn copy_spans(
    client: &tokio_postgres::Transaction<'_>,
    spans: &EncodedSpans<'_>,
) -> Result<u64, StoreError> {
    let mut copy = CopyIn::start(client, "sw_spans", SPAN_COLUMNS).await?;
    let id = |kind: LabelKind, value: &str| labels::id_in(&spans.labels, kind, value);
    for (i, s) in spans.spans.iter().enumerate() {
        let parent = non_empty_bytes(s.parent_span_id);
        let http_status = (s.http_status > 0).then_some(s.http_status as i16);
        let (attrs_dict, attrs) = match spans.attrs.get(i) {
            Some((d, a)) => (Some(d), Some(a)),
            None => (None, None),
        };
        let flags = s.flag_bits();
        let row: [&(dyn ToSql + Sync); 23] = [
            &s.start_ns,
            &s.duration_ns,
            &s.trace_id,
            &s.span_id,
            &parent,
            &id(LabelKind::Service, &s.service),
            &id(LabelKind::Instance, &s.instance),
            &id(LabelKind::Operation, &s.operation),
            &number(s.kind, SpanKind::Unspecified),
            &number(s.class, DependencyClass::Internal),
            &(s.status == SpanStatus::Error as i32),
            &non_empty(&s.status_message),
            &http_status,
            &id(LabelKind::Peer, &s.peer),
            &id(LabelKind::DbSystem, &s.db_system),
            &number(s.db_role, DbRole::Unknown),
            &id(LabelKind::Statement, &s.statement),
            &s.rows,
            &attrs_dict,
            &attrs,
            &number(s.kept, KeepReason::Sampled),
            &flags,
            &s.replica_lag_ms,
        ];
        copy.write(&row).await?;
    }
    copy.finish().await
}

fn non_empty_bytes(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

/// The key of an `sw_aggregates` row, borrowed from the batch. Ordered field by field as
/// declared (the class by its wire number): the order rows are appended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AggregateKey<'a> {
    minute: i64,
    service: &'a str,
    class: i32,
    peer: &'a str,
    operation: &'a str,
    status_class: &'a str,
}

/// The sums of a key's aggregates in one batch.
#[derive(Default)]
struct Merged {
    count: u64,
    errors: u64,
    sum_ns: u64,
    hist: Histogram,
}

/// Merges aggregates with the same key: a batch appends one row per key, in key order.
fn merge_aggregates<'a>(
    aggs: impl Iterator<Item = &'a Aggregate>,
) -> BTreeMap<AggregateKey<'a>, Merged> {
    let mut merged: BTreeMap<AggregateKey<'a>, Merged> = BTreeMap::new();
    for a in aggs {
        let key = AggregateKey {
            minute: a.minute,
            service: &a.service,
            class: a.class,
            peer: &a.peer,
            operation: &a.operation,
            status_class: &a.status_class,
        };
        let m = merged.entry(key).or_default();
        m.count += a.count;
        m.errors += a.errors;
        m.sum_ns = m.sum_ns.saturating_add(a.sum_ns);
        if let Some(h) = &a.histogram {
            m.hist.merge(h);
        }
    }
    merged
}

/// The `sw_aggregates` rows of merged aggregates, exactly as stored (in key order, a missing
/// histogram as an empty one): the rollups are built from these very rows.
fn aggregate_rows<'a>(merged: BTreeMap<AggregateKey<'a>, Merged>) -> Vec<AggregateRow<'a>> {
    merged
        .into_iter()
        .map(|(key, m)| AggregateRow {
            minute: key.minute,
            service: key.service,
            class: name(key.class, DependencyClass::Internal),
            peer: key.peer,
            operation: key.operation,
            status_class: key.status_class,
            count: saturating_i64(m.count),
            errors: saturating_i64(m.errors),
            sum_ns: saturating_i64(m.sum_ns),
            hist: m.hist,
        })
        .collect()
}

/// Days (since the Unix epoch) of the batch's spans, aggregates, calls per operation, metric
/// points and log records not older than `oldest`,
/// ascending, each once: the partitions the batch writes to.
fn live_days(batch: &Batch, spans: &[SpanRef<'_>], oldest: i64) -> Vec<i64> {
    let mut days: Vec<i64> = spans
        .iter()
        .map(|s| day_of_ns(s.start_ns))
        .filter(|d| *d >= oldest)
        .collect();
    days.extend(
        batch
            .aggregates
            .iter()
            .map(|a| day_of_ns(a.minute * 1_000_000_000))
            .filter(|d| *d >= oldest),
    );
    days.extend(
        batch
            .entry_calls
            .iter()
            .map(|e| day_of_ns(e.minute * 1_000_000_000))
            .filter(|d| *d >= oldest),
    );
    days.extend(
        batch
            .metrics
            .iter()
            .map(|m| day_of_ns(m.minute_ns))
            .filter(|d| *d >= oldest),
    );
    days.extend(
        batch
            .logs
            .iter()
            .map(|l| day_of_ns(l.time_ns))
            .filter(|d| *d >= oldest),
    );
    days.sort_unstable();
    days.dedup();
    days
}

impl Store {
    /// Stores a validated batch whole, or not at all. A batch already stored (same agent,
    /// instance and sequence) is reported as a duplicate and writes nothing. One step per
    /// table, in the order the module documentation gives.
    pub async fn store_batch(
        &self,
        batch: &Batch,
        now_ns: i64,
    ) -> Result<IngestOutcome, StoreError> {
        let spans: Vec<SpanRef<'_>> = batch.spans.iter().map(SpanRef::from).collect();
        self.store_parts(batch, &spans, now_ns).await
    }

    /// [`Store::store_batch`] of a batch whose spans are borrowed from its body.
    pub async fn store_borrowed(
        &self,
        b: &BorrowedBatch<'_>,
        now_ns: i64,
    ) -> Result<IngestOutcome, StoreError> {
        self.store_parts(&b.batch, &b.spans, now_ns).await
    }

    /// Stores `batch` with `spans` in place of its own.
    async fn store_parts(
        &self,
        batch: &Batch,
        spans: &[SpanRef<'_>],
        now_ns: i64,
    ) -> Result<IngestOutcome, StoreError> {
        let oldest = self.oldest_kept_day(now_ns);
        let live = |ns: i64| day_of_ns(ns) >= oldest;
        self.ensure_partitions(&live_days(batch, spans, oldest))
            .await?;
        // Labels and attributes before the transaction: new labels are committed on their own.
        let live_spans = self
            .encode_spans(spans.iter().filter(|s| live(s.start_ns)))
            .await?;

        let mut outcome = IngestOutcome::default();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !claim(&tx, batch, spans.len()).await? {
            tx.rollback().await?;
            outcome.duplicate = true;
            return Ok(outcome);
        }

        outcome.spans = copy_spans(&tx, &live_spans).await?;
        outcome.expired_spans = spans.len() as u64 - outcome.spans;

        let (live_aggs, expired_aggs): (Vec<&Aggregate>, Vec<&Aggregate>) = batch
            .aggregates
            .iter()
            .partition(|a| live(a.minute * 1_000_000_000));
        outcome.expired_aggregated_spans = expired_aggs
            .iter()
            .fold(0u64, |n, a| n.saturating_add(a.count));
        let merged = merge_aggregates(live_aggs.into_iter());
        let rows = aggregate_rows(merged);

        // Rows of this agent alone first, and appends.
        outcome.samples += store_host_samples(&tx, batch).await?;
        outcome.samples += store_probe_samples(&tx, batch).await?;
        crate::sample_rollups::store_host_rollups(&tx, batch).await?;
        crate::sample_rollups::store_probe_rollups(&tx, batch).await?;
        store_agent_stats(&tx, batch).await?;
        crate::versions::store_versions(&tx, batch).await?;
        crate::instances::store_instance_minutes(&tx, batch, live).await?;
        outcome.metric_points =
            crate::metric_minutes::store_metric_minutes(&tx, batch, live).await?;
        outcome.logs = crate::logs::store_logs(&tx, batch, live).await?;
        crate::recent::record(&tx, &batch.aggregates, now_ns).await?;
        outcome.aggregates = insert_aggregates(&tx, &rows).await?;
        rollups::store_rollups(&tx, &rows).await?;
        // Then the rows every agent of a service upserts, last, so that their locks are held
        // until the commit as briefly as can be (the other agents of the service wait on
        // them), each table in key order and in the same order in every batch (no deadlock).
        crate::entry_calls::store_entry_calls(&tx, batch, live).await?;
        store_flag_counts(&tx, spans.iter().filter(|s| live(s.start_ns)), now_ns).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Claims the batch in `sw_batches`: false when it was stored before.
async fn claim(tx: &Transaction<'_>, batch: &Batch, spans: usize) -> Result<bool, StoreError> {
    let claimed = tx
        .execute(
            "INSERT INTO sw_batches (agent_id, instance, sequence, spans) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[
                &batch.agent_id,
                &batch.instance,
                &(batch.sequence as i64),
                &(spans as i32),
            ],
        )
        .await?;
    Ok(claimed != 0)
}

/// Columns of `sw_aggregates` a batch appends, in COPY order, with their types.
const AGGREGATE_COLUMNS: &[(&str, Type)] = &[
    ("minute", Type::TIMESTAMPTZ),
    ("service", Type::TEXT),
    ("class", Type::TEXT),
    ("peer", Type::TEXT),
    ("operation", Type::TEXT),
    ("status_class", Type::TEXT),
    ("count", Type::INT8),
    ("errors", Type::INT8),
    ("sum_ns", Type::INT8),
    ("hist_zero", Type::INT8),
    ("hist_keys", Type::INT4_ARRAY),
    ("hist_counts", Type::INT8_ARRAY),
];

/// Appends `rows` to `sw_aggregates` with binary COPY; returns how many. Rows of the same
/// key from other batches are merged later (`compaction.rs`).
pub(crate) async fn insert_aggregates(
    tx: &Transaction<'_>,
    rows: &[AggregateRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut copy = CopyIn::start(tx, "sw_aggregates", AGGREGATE_COLUMNS).await?;
    let mut counts: Vec<i64> = Vec::new();
    for r in rows {
        counts_i64(&r.hist, &mut counts);
        copy.write(&[
            &timestamp(r.minute),
            &r.service,
            &r.class,
            &r.peer,
            &r.operation,
            &r.status_class,
            &r.count,
            &r.errors,
            &r.sum_ns,
            &saturating_i64(r.hist.zero_count),
            &r.hist.keys,
            &counts,
        ])
        .await?;
    }
    copy.finish().await
}

/// Inserts the batch's host samples into `sw_host_samples` in one statement; returns how
/// many. (A statement a sample was 1,800 round trips for the benchmark's 300 batches.)
async fn store_host_samples(tx: &Transaction<'_>, batch: &Batch) -> Result<u64, StoreError> {
    let h = &batch.hosts;
    if h.is_empty() {
        return Ok(0);
    }
    let disks = h
        .iter()
        .map(|s| serde_json::to_value(&s.disks))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_host_samples (time, agent_id, host, cpu_percent, mem_used_bytes,
                 mem_total_bytes, load1, load5, load15, net_rx_bytes_per_s, net_tx_bytes_per_s,
                 process_count, disks, app_cpu_percent, app_rss_bytes, app_threads)
             SELECT to_timestamp(t), $1, host, cpu, mem_used, mem_total, l1, l5, l15, rx, tx,
                    processes, disks, app_cpu, app_rss, app_threads
               FROM unnest($2::float8[], $3::text[], $4::float8[], $5::int8[], $6::int8[],
                           $7::float8[], $8::float8[], $9::float8[], $10::int8[], $11::int8[],
                           $12::int4[], $13::jsonb[], $14::float8[], $15::int8[], $16::int4[])
                    AS s(t, host, cpu, mem_used, mem_total, l1, l5, l15, rx, tx, processes,
                         disks, app_cpu, app_rss, app_threads)",
        )
        .await?;
    let column = |f: fn(&stormwatch_model::HostSample) -> i64| h.iter().map(f).collect::<Vec<_>>();
    let real = |f: fn(&stormwatch_model::HostSample) -> f64| h.iter().map(f).collect::<Vec<_>>();
    Ok(tx
        .execute(
            &stmt,
            &[
                &batch.agent_id,
                &real(|s| s.time_ns as f64 / 1e9),
                &h.iter().map(|s| s.host.as_str()).collect::<Vec<_>>(),
                &real(|s| s.cpu_percent),
                &column(|s| saturating_i64(s.mem_used_bytes)),
                &column(|s| saturating_i64(s.mem_total_bytes)),
                &real(|s| s.load1),
                &real(|s| s.load5),
                &real(|s| s.load15),
                &column(|s| saturating_i64(s.net_rx_bytes_per_s)),
                &column(|s| saturating_i64(s.net_tx_bytes_per_s)),
                &h.iter()
                    .map(|s| s.process_count.min(i32::MAX as u32) as i32)
                    .collect::<Vec<_>>(),
                &disks,
                &h.iter().map(|s| s.app_cpu_percent).collect::<Vec<_>>(),
                &h.iter()
                    .map(|s| s.app_rss_bytes.map(saturating_i64))
                    .collect::<Vec<_>>(),
                &h.iter()
                    .map(|s| s.app_threads.map(|v| v.min(i32::MAX as u32) as i32))
                    .collect::<Vec<_>>(),
            ],
        )
        .await?)
}

/// Inserts the batch's probe samples into `sw_probe_samples` in one statement; returns how
/// many.
async fn store_probe_samples(tx: &Transaction<'_>, batch: &Batch) -> Result<u64, StoreError> {
    let p = &batch.probes;
    if p.is_empty() {
        return Ok(0);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_probe_samples (time, agent_id, database, engine, role, connect_us,
                 query_us, failure, failure_message, lag_seconds, lag_bytes, replay_paused, detail)
             SELECT to_timestamp(t), $1, database, engine, role, connect_us, query_us, failure,
                    failure_message, lag_seconds, lag_bytes, replay_paused, detail
               FROM unnest($2::float8[], $3::text[], $4::text[], $5::text[], $6::int8[],
                           $7::int8[], $8::text[], $9::text[], $10::float8[], $11::int8[],
                           $12::bool[], $13::jsonb[])
                    AS s(t, database, engine, role, connect_us, query_us, failure,
                         failure_message, lag_seconds, lag_bytes, replay_paused, detail)",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &batch.agent_id,
                &p.iter().map(|s| s.time_ns as f64 / 1e9).collect::<Vec<_>>(),
                &p.iter().map(|s| s.database.as_str()).collect::<Vec<_>>(),
                &p.iter().map(|s| s.engine.as_str()).collect::<Vec<_>>(),
                &p.iter()
                    .map(|s| name(s.role, DbRole::Unknown))
                    .collect::<Vec<_>>(),
                &p.iter().map(|s| s.connect_us).collect::<Vec<_>>(),
                &p.iter().map(|s| s.query_us).collect::<Vec<_>>(),
                &p.iter()
                    .map(|s| name(s.failure, FailureClass::Other))
                    .collect::<Vec<_>>(),
                &p.iter()
                    .map(|s| non_empty(&s.failure_message))
                    .collect::<Vec<_>>(),
                &p.iter().map(|s| s.lag_seconds).collect::<Vec<_>>(),
                &p.iter().map(|s| s.lag_bytes).collect::<Vec<_>>(),
                &p.iter().map(|s| s.replay_paused).collect::<Vec<_>>(),
                &p.iter().map(|s| Json(&s.detail)).collect::<Vec<_>>(),
            ],
        )
        .await?)
}

/// Updates the agent's row in `sw_agents` (its latest counters, one batch more) and, when the
/// batch carries counters, records them in `sw_agent_stats`.
async fn store_agent_stats(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    let stats = batch.stats.clone().unwrap_or_default();
    tx.execute(
        // `last_seen` through `excluded`: Citus takes only immutable functions in DO UPDATE.
        "INSERT INTO sw_agents AS a (agent_id, instance, batches, spans_received, spans_kept, spans_dropped, spool_bytes,
                                     spans_lost, dead_letter_batches, last_seen)
         VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (agent_id) DO UPDATE SET
             instance = excluded.instance, last_seen = excluded.last_seen, batches = a.batches + 1,
             spans_received = excluded.spans_received, spans_kept = excluded.spans_kept,
             spans_dropped = excluded.spans_dropped, spool_bytes = excluded.spool_bytes,
             spans_lost = excluded.spans_lost, dead_letter_batches = excluded.dead_letter_batches",
        &[
            &batch.agent_id,
            &batch.instance,
            &(stats.spans_received as i64),
            &(stats.spans_kept as i64),
            &(stats.spans_dropped as i64),
            &(stats.spool_bytes as i64),
            &saturating_i64(stats.spans_lost),
            &saturating_i64(stats.dead_letter_batches),
        ],
    )
    .await?;
    if batch.stats.is_some() {
        tx.execute(
            "INSERT INTO sw_agent_stats (agent_id, instance, spans_dropped) VALUES ($1, $2, $3)",
            &[
                &batch.agent_id,
                &batch.instance,
                &(stats.spans_dropped as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The key of an `sw_flag_counts` row. Ordered field by field as declared: the order rows are
/// upserted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FlagKey<'a> {
    /// Unix seconds.
    minute: i64,
    service: &'a str,
    operation: &'a str,
    peer: &'a str,
    flag: &'a str,
}

/// Column arrays of an `unnest` insert into `sw_flag_counts`.
#[derive(Default)]
struct FlagColumns<'a> {
    minutes: Vec<f64>,
    services: Vec<&'a str>,
    operations: Vec<&'a str>,
    peers: Vec<&'a str>,
    flags: Vec<&'a str>,
    counts: Vec<i64>,
}

/// Adds the [`COUNTED_FLAGS`] of `spans` to `sw_flag_counts`, per minute of their end.
async fn store_flag_counts<'a>(
    tx: &tokio_postgres::Transaction<'_>,
    spans: impl Iterator<Item = &'a SpanRef<'a>>,
    now_ns: i64,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<FlagKey<'_>, i64> = BTreeMap::new();
    let mut recent: Vec<&SpanRef<'_>> = Vec::new();
    for s in spans {
        if crate::recent::is_recent(s.end_ns(), now_ns) {
            recent.push(s);
        }
        for flag in COUNTED_FLAGS {
            if s.flags.contains(&(flag as i32)) {
                let key = FlagKey {
                    minute: s.end_ns().div_euclid(60_000_000_000) * 60,
                    service: &s.service,
                    operation: &s.operation,
                    peer: &s.peer,
                    flag: flag.as_str(),
                };
                *counts.entry(key).or_default() += 1;
            }
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    crate::recent::record_flags(tx, &recent, now_ns).await?;
    let mut cols = FlagColumns::default();
    for (key, n) in &counts {
        cols.minutes.push(key.minute as f64);
        cols.services.push(key.service);
        cols.operations.push(key.operation);
        cols.peers.push(key.peer);
        cols.flags.push(key.flag);
        cols.counts.push(*n);
    }
    tx.execute(
        "INSERT INTO sw_flag_counts AS f (minute, service, operation, peer, flag, count)
         SELECT to_timestamp(m), s, o, p, fl, n
           FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                AS t(m, s, o, p, fl, n)
         ON CONFLICT (minute, service, operation, peer, flag) DO UPDATE SET count = f.count + excluded.count",
        &[
            &cols.minutes,
            &cols.services,
            &cols.operations,
            &cols.peers,
            &cols.flags,
            &cols.counts,
        ],
    )
    .await?;
    Ok(())
}
