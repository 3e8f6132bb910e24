//! OTLP metric series per minute (`sw_metric_minutes`, migration 0020): written with each batch,
//! parts of the same minute merged like [`MetricPoint::merge`].

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use postgres_types::Json;
use stormwatch_model::{Batch, MetricPoint};

use crate::{saturating_i64, StoreError};

/// The key of a merged point: the columns of the table's key (the attributes themselves, where
/// the table holds their MD5), ordered field by field as declared. Points are upserted in this
/// order, the same in every batch, so two batches cannot deadlock.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PointKey<'a> {
    name: &'a str,
    service: &'a str,
    minute_ns: i64,
    instance: &'a str,
    kind: i32,
    unit: &'a str,
    attributes: &'a BTreeMap<String, String>,
}

/// A part that neither counted anything nor has a last value: it carries nothing (merged, it
/// could only replace a `last` of time 0), so it is not written.
fn is_empty(p: &MetricPoint) -> bool {
    p.count == 0 && p.last_ns == 0
}

/// Column arrays of the `unnest` upsert. Histogram bounds and buckets of every row are
/// concatenated into one array each, and each row slices its own (offset, length) out: an
/// array of arrays cannot be sent, and a text literal per row would not be exact.
#[derive(Default)]
struct Columns<'a> {
    minutes: Vec<f64>,
    names: Vec<&'a str>,
    services: Vec<&'a str>,
    instances: Vec<&'a str>,
    kinds: Vec<i16>,
    units: Vec<&'a str>,
    attributes: Vec<Json<&'a BTreeMap<String, String>>>,
    counts: Vec<i64>,
    sums: Vec<f64>,
    mins: Vec<f64>,
    maxs: Vec<f64>,
    lasts: Vec<f64>,
    last_ns: Vec<i64>,
    bounds: Vec<f64>,
    bound_at: Vec<i32>,
    bound_len: Vec<i32>,
    buckets: Vec<i64>,
    bucket_at: Vec<i32>,
    bucket_len: Vec<i32>,
}

/// Upserts the batch's metric points whose minute passes `live`: merged per key first (with
/// [`MetricPoint::merge`]), then merged into the stored row in SQL the same way. Returns how
/// many rows it wrote.
pub(crate) async fn store_metric_minutes(
    tx: &Transaction<'_>,
    batch: &Batch,
    live: impl Fn(i64) -> bool,
) -> Result<u64, StoreError> {
    let mut merged: BTreeMap<PointKey<'_>, MetricPoint> = BTreeMap::new();
    for p in &batch.metrics {
        if !live(p.minute_ns) || is_empty(p) {
            continue;
        }
        let key = PointKey {
            name: &p.name,
            service: &p.service,
            minute_ns: p.minute_ns,
            instance: &p.instance,
            kind: p.kind,
            unit: &p.unit,
            attributes: &p.attributes,
        };
        match merged.get_mut(&key) {
            Some(m) => m.merge(p),
            None => {
                merged.insert(key, p.clone());
            }
        }
    }
    if merged.is_empty() {
        return Ok(0);
    }
    let mut c = Columns::default();
    for (k, p) in &merged {
        c.minutes.push((k.minute_ns / 1_000_000_000) as f64);
        c.names.push(k.name);
        c.services.push(k.service);
        c.instances.push(k.instance);
        c.kinds.push(k.kind as i16);
        c.units.push(k.unit);
        c.attributes.push(Json(k.attributes));
        c.counts.push(saturating_i64(p.count));
        c.sums.push(p.sum);
        c.mins.push(p.min);
        c.maxs.push(p.max);
        c.lasts.push(p.last);
        c.last_ns.push(p.last_ns);
        c.bound_at.push(c.bounds.len() as i32);
        c.bound_len.push(p.bounds.len() as i32);
        c.bounds.extend_from_slice(&p.bounds);
        c.bucket_at.push(c.buckets.len() as i32);
        c.bucket_len.push(p.buckets.len() as i32);
        c.buckets
            .extend(p.buckets.iter().map(|b| saturating_i64(*b)));
    }
    // The merge of `MetricPoint::merge`: a part that counted something adds its count, sum
    // and buckets (equal bounds; a row without buckets takes the part's) and widens min and
    // max (replaces them on a row that counted nothing); any part brings its `last` when its
    // `last_ns` is not earlier (a tie: the newer part).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_metric_minutes AS m
                 (minute, name, service, instance, kind, unit, attributes_md5, agent_id,
                  attributes, count, sum, min, max, last, last_ns, bounds, buckets)
             SELECT to_timestamp(mi), na, se, ins, ki, un, decode(md5(at::text), 'hex'), $20,
                    at, n, su, mn, mx, la, ln,
                    ($14::float8[])[bo + 1 : bo + bl], ($17::int8[])[ko + 1 : ko + kl]
               FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::int2[],
                           $6::text[], $7::jsonb[], $8::int8[], $9::float8[], $10::float8[],
                           $11::float8[], $12::float8[], $13::int8[], $15::int4[],
                           $16::int4[], $18::int4[], $19::int4[])
                    AS t(mi, na, se, ins, ki, un, at, n, su, mn, mx, la, ln, bo, bl, ko, kl)
             ON CONFLICT (name, service, minute, instance, kind, unit, attributes_md5, agent_id)
             DO UPDATE SET
                 count = m.count + excluded.count,
                 sum = CASE WHEN excluded.count = 0 THEN m.sum ELSE m.sum + excluded.sum END,
                 min = CASE WHEN excluded.count = 0 THEN m.min
                            WHEN m.count = 0 THEN excluded.min
                            ELSE least(m.min, excluded.min) END,
                 max = CASE WHEN excluded.count = 0 THEN m.max
                            WHEN m.count = 0 THEN excluded.max
                            ELSE greatest(m.max, excluded.max) END,
                 last = CASE WHEN excluded.last_ns >= m.last_ns THEN excluded.last
                             ELSE m.last END,
                 last_ns = greatest(m.last_ns, excluded.last_ns),
                 bounds = CASE WHEN excluded.count > 0 AND cardinality(m.buckets) = 0
                               THEN excluded.bounds ELSE m.bounds END,
                 buckets = CASE WHEN excluded.count = 0 THEN m.buckets
                                WHEN cardinality(m.buckets) = 0 THEN excluded.buckets
                                WHEN m.bounds = excluded.bounds
                                     AND cardinality(m.buckets) = cardinality(excluded.buckets)
                                THEN sw_add_buckets(m.buckets, excluded.buckets)
                                ELSE m.buckets END",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &c.minutes,
                &c.names,
                &c.services,
                &c.instances,
                &c.kinds,
                &c.units,
                &c.attributes,
                &c.counts,
                &c.sums,
                &c.mins,
                &c.maxs,
                &c.lasts,
                &c.last_ns,
                &c.bounds,
                &c.bound_at,
                &c.bound_len,
                &c.buckets,
                &c.bucket_at,
                &c.bucket_len,
                &batch.agent_id,
            ],
        )
        .await?)
}
