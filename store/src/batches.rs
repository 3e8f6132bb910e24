//! Storing one agent batch: one transaction, at most once per (agent, instance, sequence).

use std::collections::BTreeMap;

use futures_util::pin_mut;
use postgres_types::{Json, ToSql, Type};
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{
    Aggregate, Batch, DbRole, FailureClass, Histogram, KeepReason, Span, SpanFlag, SpanKind,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

use crate::histogram_codec::histogram_literals;
use crate::partitions::day_of_ns;
use crate::{Store, StoreError};

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
}

/// Columns of `sw_spans` in COPY order, with their types.
pub(crate) const SPAN_COLUMNS: &[(&str, Type)] = &[
    ("start_ns", Type::INT8),
    ("duration_ns", Type::INT8),
    ("trace_id", Type::BYTEA),
    ("span_id", Type::BYTEA),
    ("parent_span_id", Type::BYTEA),
    ("service", Type::TEXT),
    ("instance", Type::TEXT),
    ("operation", Type::TEXT),
    ("kind", Type::TEXT),
    ("class", Type::TEXT),
    ("is_error", Type::BOOL),
    ("status_message", Type::TEXT),
    ("http_status", Type::INT2),
    ("peer", Type::TEXT),
    ("db_system", Type::TEXT),
    ("db_role", Type::TEXT),
    ("statement", Type::TEXT),
    ("rows", Type::INT8),
    ("attributes", Type::JSONB),
    ("kept", Type::TEXT),
    ("flags", Type::INT4),
    ("replica_lag_ms", Type::INT8),
];

fn name<E: WireEnum>(n: i32, fallback: E) -> &'static str {
    E::from_number(n).unwrap_or(fallback).as_str()
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Writes `spans` with binary COPY into `sw_spans` (routed to their daily partitions).
/// Public so the benchmark can measure the raw COPY ceiling with the very same encoding.
pub async fn copy_spans<'a>(
    client: &tokio_postgres::Transaction<'_>,
    spans: impl Iterator<Item = &'a Span>,
) -> Result<u64, StoreError> {
    let columns: Vec<&str> = SPAN_COLUMNS.iter().map(|(c, _)| *c).collect();
    let types: Vec<Type> = SPAN_COLUMNS.iter().map(|(_, t)| t.clone()).collect();
    let sink = client
        .copy_in(&format!(
            "COPY sw_spans ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for s in spans {
        let parent = non_empty_bytes(&s.parent_span_id);
        let http_status = (s.http_status > 0).then_some(s.http_status as i16);
        let attributes = (!s.attributes.is_empty()).then_some(Json(&s.attributes));
        let flags = s.flag_bits();
        let row: [&(dyn ToSql + Sync); 22] = [
            &s.start_ns,
            &s.duration_ns,
            &s.trace_id,
            &s.span_id,
            &parent,
            &s.service,
            &s.instance,
            &s.operation,
            &name(s.kind, SpanKind::Unspecified),
            &s.dependency_class().as_str(),
            &s.is_error(),
            &non_empty(&s.status_message),
            &http_status,
            &non_empty(&s.peer),
            &non_empty(&s.db_system),
            &name(s.db_role, DbRole::Unknown),
            &non_empty(&s.statement),
            &s.rows,
            &attributes,
            &name(s.kept, KeepReason::Sampled),
            &flags,
            &s.replica_lag_ms,
        ];
        writer.as_mut().write(&row).await?;
    }
    Ok(writer.finish().await?)
}

fn non_empty_bytes(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

type AggKey = (i64, String, i32, String, String, String);

/// Merges aggregates with the same key so one upsert statement touches each row once, in key
/// order (two transactions upserting the same rows in the same order cannot deadlock).
fn merge_aggregates(aggs: &[Aggregate]) -> BTreeMap<AggKey, Aggregate> {
    let mut merged: BTreeMap<AggKey, Aggregate> = BTreeMap::new();
    for a in aggs {
        let key = (
            a.minute,
            a.service.clone(),
            a.class,
            a.peer.clone(),
            a.operation.clone(),
            a.status_class.clone(),
        );
        match merged.get_mut(&key) {
            Some(m) => {
                m.count += a.count;
                m.errors += a.errors;
                m.sum_ns = m.sum_ns.saturating_add(a.sum_ns);
                if let (Some(mh), Some(ah)) = (m.histogram.as_mut(), a.histogram.as_ref()) {
                    mh.merge(ah);
                }
            }
            None => {
                merged.insert(key, a.clone());
            }
        }
    }
    merged
}

impl Store {
    /// Stores a validated batch whole, or not at all. A batch already stored (same agent,
    /// instance and sequence) is reported as a duplicate and writes nothing.
    pub async fn store_batch(
        &self,
        batch: &Batch,
        now_ns: i64,
    ) -> Result<IngestOutcome, StoreError> {
        let oldest = self.oldest_kept_day(now_ns);
        let live = |ns: i64| day_of_ns(ns) >= oldest;
        let mut days: Vec<i64> = batch
            .spans
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
        days.sort_unstable();
        days.dedup();
        self.ensure_partitions(&days).await?;

        let mut outcome = IngestOutcome::default();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let claimed = tx
            .execute(
                "INSERT INTO sw_batches (agent_id, instance, sequence, spans) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&batch.agent_id, &batch.instance, &(batch.sequence as i64), &(batch.spans.len() as i32)],
            )
            .await?;
        if claimed == 0 {
            tx.rollback().await?;
            outcome.duplicate = true;
            return Ok(outcome);
        }

        let live_spans = batch.spans.iter().filter(|s| live(s.start_ns));
        outcome.spans = copy_spans(&tx, live_spans).await?;
        outcome.expired_spans = batch.spans.len() as u64 - outcome.spans;

        let aggs: Vec<Aggregate> = batch
            .aggregates
            .iter()
            .filter(|a| live(a.minute * 1_000_000_000))
            .cloned()
            .collect();
        outcome.expired_aggregated_spans = batch
            .aggregates
            .iter()
            .filter(|a| !live(a.minute * 1_000_000_000))
            .fold(0u64, |n, a| n.saturating_add(a.count));
        let merged = merge_aggregates(&aggs);
        // The dependency rollup of exactly the rows written below (histogram `None` stored as
        // empty), written last: its rows are shared by every service calling a peer, so the
        // transaction holds their locks for as short a time as it can.
        let stored_hists: Vec<Histogram> = merged
            .values()
            .map(|a| a.histogram.clone().unwrap_or_default())
            .collect();
        let dependency_rows =
            crate::rollups::rollup(merged.iter().zip(&stored_hists).map(|((key, a), h)| {
                let (minute, _, class, peer, _, status) = key;
                (
                    *minute,
                    name(*class, stormwatch_model::DependencyClass::Internal),
                    peer.as_str(),
                    status.as_str(),
                    a.count.min(i64::MAX as u64) as i64,
                    a.errors.min(i64::MAX as u64) as i64,
                    a.sum_ns.min(i64::MAX as u64) as i64,
                    h,
                )
            }));
        let service_rows =
            crate::rollups::rollup_by(merged.iter().zip(&stored_hists).map(|((key, a), h)| {
                let (minute, service, class, _, _, status) = key;
                (
                    *minute,
                    service.as_str(),
                    crate::rollups::service_entry(name(
                        *class,
                        stormwatch_model::DependencyClass::Internal,
                    )),
                    status.as_str(),
                    a.count.min(i64::MAX as u64) as i64,
                    a.errors.min(i64::MAX as u64) as i64,
                    a.sum_ns.min(i64::MAX as u64) as i64,
                    h,
                )
            }));
        if !merged.is_empty() {
            let n = merged.len();
            let mut minutes = Vec::with_capacity(n);
            let (mut services, mut classes, mut peers, mut ops, mut statuses) =
                (vec![], vec![], vec![], vec![], vec![]);
            let (mut counts, mut errors, mut sums) = (vec![], vec![], vec![]);
            let (mut zeros, mut hist_keys, mut hist_counts) = (vec![], vec![], vec![]);
            for (((minute, service, class, peer, op, status), a), h) in
                merged.iter().zip(&stored_hists)
            {
                minutes.push(*minute as f64);
                services.push(service.as_str());
                classes.push(name(*class, stormwatch_model::DependencyClass::Internal));
                peers.push(peer.as_str());
                ops.push(op.as_str());
                statuses.push(status.as_str());
                counts.push(a.count.min(i64::MAX as u64) as i64);
                errors.push(a.errors.min(i64::MAX as u64) as i64);
                sums.push(a.sum_ns.min(i64::MAX as u64) as i64);
                let (k, c) = histogram_literals(h);
                zeros.push(h.zero_count.min(i64::MAX as u64) as i64);
                hist_keys.push(k);
                hist_counts.push(c);
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sw_aggregates AS a
                         (minute, service, class, peer, operation, status_class, count, errors, sum_ns,
                          hist_zero, hist_keys, hist_counts)
                     SELECT to_timestamp(m), s, c, p, o, sc, n, e, su, z, hk::integer[], hc::bigint[]
                       FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                   $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::text[])
                            AS t(m, s, c, p, o, sc, n, e, su, z, hk, hc)
                     ON CONFLICT (minute, service, class, peer, operation, status_class) DO UPDATE SET
                         count = a.count + excluded.count,
                         errors = a.errors + excluded.errors,
                         sum_ns = a.sum_ns + excluded.sum_ns,
                         hist_zero = a.hist_zero + excluded.hist_zero,
                         hist_keys = sw_hist_merge_keys(a.hist_keys, excluded.hist_keys),
                         hist_counts = sw_hist_merge_counts(a.hist_keys, a.hist_counts,
                                                            excluded.hist_keys, excluded.hist_counts)",
                )
                .await?;
            outcome.aggregates = tx
                .execute(
                    &stmt,
                    &[
                        &minutes,
                        &services,
                        &classes,
                        &peers,
                        &ops,
                        &statuses,
                        &counts,
                        &errors,
                        &sums,
                        &zeros,
                        &hist_keys,
                        &hist_counts,
                    ],
                )
                .await?;
        }

        if !batch.hosts.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sw_host_samples (time, agent_id, host, cpu_percent, mem_used_bytes,
                         mem_total_bytes, load1, load5, load15, net_rx_bytes_per_s, net_tx_bytes_per_s,
                         process_count, disks, app_cpu_percent, app_rss_bytes, app_threads)
                     VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .await?;
            for h in &batch.hosts {
                let disks = serde_json::to_value(&h.disks)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                tx.execute(
                    &stmt,
                    &[
                        &(h.time_ns as f64 / 1e9),
                        &batch.agent_id,
                        &h.host,
                        &h.cpu_percent,
                        &(h.mem_used_bytes as i64),
                        &(h.mem_total_bytes as i64),
                        &h.load1,
                        &h.load5,
                        &h.load15,
                        &(h.net_rx_bytes_per_s as i64),
                        &(h.net_tx_bytes_per_s as i64),
                        &(h.process_count as i32),
                        &disks,
                        &h.app_cpu_percent,
                        &h.app_rss_bytes.map(|v| v as i64),
                        &h.app_threads.map(|v| v as i32),
                    ],
                )
                .await?;
                outcome.samples += 1;
            }
        }

        if !batch.probes.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sw_probe_samples (time, agent_id, database, engine, role, connect_us,
                         query_us, failure, failure_message, lag_seconds, lag_bytes, replay_paused, detail)
                     VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .await?;
            for p in &batch.probes {
                tx.execute(
                    &stmt,
                    &[
                        &(p.time_ns as f64 / 1e9),
                        &batch.agent_id,
                        &p.database,
                        &p.engine,
                        &name(p.role, DbRole::Unknown),
                        &p.connect_us,
                        &p.query_us,
                        &name(p.failure, FailureClass::Other),
                        &non_empty(&p.failure_message),
                        &p.lag_seconds,
                        &p.lag_bytes,
                        &p.replay_paused,
                        &Json(&p.detail),
                    ],
                )
                .await?;
                outcome.samples += 1;
            }
        }

        let stats = batch.stats.clone().unwrap_or_default();
        tx.execute(
            "INSERT INTO sw_agents AS a (agent_id, instance, batches, spans_received, spans_kept, spans_dropped, spool_bytes,
                                         spans_lost, dead_letter_batches)
             VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (agent_id) DO UPDATE SET
                 instance = excluded.instance, last_seen = now(), batches = a.batches + 1,
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
                &(stats.spans_lost.min(i64::MAX as u64) as i64),
                &(stats.dead_letter_batches.min(i64::MAX as u64) as i64),
            ],
        )
        .await?;
        if batch.stats.is_some() {
            tx.execute(
                "INSERT INTO sw_agent_stats (agent_id, instance, spans_dropped) VALUES ($1, $2, $3)",
                &[&batch.agent_id, &batch.instance, &(stats.spans_dropped as i64)],
            )
            .await?;
        }
        store_flag_counts(&tx, batch.spans.iter().filter(|s| live(s.start_ns))).await?;
        crate::rollups::store(&tx, &crate::rollups::SERVICES, &service_rows).await?;
        crate::rollups::store(
            &tx,
            &crate::rollups::SERVICE_HOURS,
            &crate::rollups::by_hour(&service_rows),
        )
        .await?;
        crate::rollups::store(&tx, &crate::rollups::DEPENDENCIES, &dependency_rows).await?;
        crate::rollups::store(
            &tx,
            &crate::rollups::DEPENDENCY_HOURS,
            &crate::rollups::by_hour(&dependency_rows),
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Flags counted per minute for alert rules (see migrations/0002_alerts.sql). Slow and error
/// are left out: the aggregates already count them exactly.
const COUNTED_FLAGS: [SpanFlag; 3] = [
    SpanFlag::FullScanSuspect,
    SpanFlag::ReplicaLag,
    SpanFlag::ConnectFailure,
];

/// Column arrays of an `unnest` insert into `sw_flag_counts`.
type FlagColumns<'a> = (
    Vec<f64>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<i64>,
);

async fn store_flag_counts<'a>(
    tx: &tokio_postgres::Transaction<'_>,
    spans: impl Iterator<Item = &'a Span>,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<(i64, &str, &str, &str, &str), i64> = BTreeMap::new();
    for s in spans {
        for flag in COUNTED_FLAGS {
            if s.flags.contains(&(flag as i32)) {
                let minute = s.end_ns().div_euclid(60_000_000_000) * 60;
                *counts
                    .entry((minute, &s.service, &s.operation, &s.peer, flag.as_str()))
                    .or_default() += 1;
            }
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let mut cols = FlagColumns::default();
    for ((minute, service, op, peer, flag), n) in &counts {
        cols.0.push(*minute as f64);
        cols.1.push(service);
        cols.2.push(op);
        cols.3.push(peer);
        cols.4.push(flag);
        cols.5.push(*n);
    }
    tx.execute(
        "INSERT INTO sw_flag_counts AS f (minute, service, operation, peer, flag, count)
         SELECT to_timestamp(m), s, o, p, fl, n
           FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                AS t(m, s, o, p, fl, n)
         ON CONFLICT (minute, service, operation, peer, flag) DO UPDATE SET count = f.count + excluded.count",
        &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5],
    )
    .await?;
    Ok(())
}
