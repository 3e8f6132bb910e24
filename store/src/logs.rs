//! OTLP log records (`sw_logs`, migration 0020): appended with each batch. Times are kept to
//! the microsecond (`timestamptz`).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use postgres_types::Json;
use stormwatch_model::{Batch, LogRecord};

use crate::StoreError;

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
