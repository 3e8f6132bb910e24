//! OTLP log records (`sw_logs`, migration 0020): appended with each batch, read by trace (for
//! a trace's waterfall) or by service and least severity (newest first). Times are kept to the
//! microsecond (`timestamptz`): a record's `time_ns` reads back rounded down to one.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use postgres_types::Json;
use stormwatch_model::{Batch, LogRecord};

use crate::{Store, StoreError};

/// Most records one [`Store::logs`] call returns.
pub const MAX_LOGS: i64 = 10_000;

/// Which records [`Store::logs`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFilter {
    /// The records of one trace (16 bytes), oldest first.
    Trace(Vec<u8>),
    /// A service's records at `min_severity` (an OTLP severity number: 13 is WARN, 17 ERROR)
    /// or above, newest first.
    Service { service: String, min_severity: i32 },
}

fn non_empty(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

/// Inserts the batch's records whose time passes `live` with one `INSERT … SELECT FROM
/// unnest(…)`; returns how many.
pub(crate) async fn store_logs(
    tx: &Transaction<'_>,
    batch: &Batch,
    live: impl Fn(i64) -> bool,
) -> Result<u64, StoreError> {
    let logs: Vec<&LogRecord> = batch.logs.iter().filter(|l| live(l.time_ns)).collect();
    if logs.is_empty() {
        return Ok(0);
    }
    let micros: Vec<i64> = logs.iter().map(|l| l.time_ns.div_euclid(1_000)).collect();
    let services: Vec<&str> = logs.iter().map(|l| l.service.as_str()).collect();
    let instances: Vec<&str> = logs.iter().map(|l| l.instance.as_str()).collect();
    let severities: Vec<i16> = logs.iter().map(|l| l.severity_number as i16).collect();
    let texts: Vec<&str> = logs.iter().map(|l| l.severity_text.as_str()).collect();
    let bodies: Vec<&str> = logs.iter().map(|l| l.body.as_str()).collect();
    let traces: Vec<Option<&[u8]>> = logs.iter().map(|l| non_empty(&l.trace_id)).collect();
    let spans: Vec<Option<&[u8]>> = logs.iter().map(|l| non_empty(&l.span_id)).collect();
    let attributes: Vec<Json<&BTreeMap<String, String>>> =
        logs.iter().map(|l| Json(&l.attributes)).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_logs (time, agent_id, service, instance, severity_number,
                                  severity_text, body, trace_id, span_id, attributes)
             SELECT 'epoch'::timestamptz + us * interval '1 microsecond', $10, s, i, sn, st, b,
                    tr, sp, a
               FROM unnest($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[],
                           $6::text[], $7::bytea[], $8::bytea[], $9::jsonb[])
                    AS t(us, s, i, sn, st, b, tr, sp, a)",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &micros,
                &services,
                &instances,
                &severities,
                &texts,
                &bodies,
                &traces,
                &spans,
                &attributes,
                &batch.agent_id,
            ],
        )
        .await?)
}

impl Store {
    /// The records `filter` selects with a time in `[from_ns, to_ns)`, at most `limit`
    /// (clamped to [`MAX_LOGS`]): a trace's oldest first, a service's newest first.
    pub async fn logs(
        &self,
        filter: &LogFilter,
        from_ns: i64,
        to_ns: i64,
        limit: i64,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let limit = limit.clamp(0, MAX_LOGS);
        let (from, to) = (from_ns as f64 / 1e9, to_ns as f64 / 1e9);
        let client = self.client().await?;
        const COLUMNS: &str = "(extract(epoch FROM time) * 1000000)::int8, service, instance,
                               severity_number, severity_text, body, trace_id, span_id, attributes";
        let rows = match filter {
            LogFilter::Trace(trace_id) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM sw_logs
                          WHERE trace_id = $1
                            AND time >= to_timestamp($2) AND time < to_timestamp($3)
                          ORDER BY time, span_id
                          LIMIT $4"
                    ))
                    .await?;
                client.query(&stmt, &[trace_id, &from, &to, &limit]).await?
            }
            LogFilter::Service {
                service,
                min_severity,
            } => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM sw_logs
                          WHERE service = $1 AND severity_number >= $2
                            AND time >= to_timestamp($3) AND time < to_timestamp($4)
                          ORDER BY time DESC
                          LIMIT $5"
                    ))
                    .await?;
                let min = (*min_severity).clamp(0, i32::from(i16::MAX)) as i16;
                client
                    .query(&stmt, &[service, &min, &from, &to, &limit])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| {
                let Json(attributes): Json<BTreeMap<String, String>> = r.get(8);
                LogRecord {
                    time_ns: r.get::<_, i64>(0).saturating_mul(1_000),
                    service: r.get(1),
                    instance: r.get(2),
                    severity_number: i32::from(r.get::<_, i16>(3)),
                    severity_text: r.get(4),
                    body: r.get(5),
                    trace_id: r.get::<_, Option<Vec<u8>>>(6).unwrap_or_default(),
                    span_id: r.get::<_, Option<Vec<u8>>>(7).unwrap_or_default(),
                    attributes,
                }
            })
            .collect())
    }
}
