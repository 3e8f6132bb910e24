//! Binary COPY into a table: how a batch appends its rows where nothing is merged on the way
//! in (spans, aggregates, recent aggregates). Values go as PostgreSQL's binary forms, so
//! neither side formats or parses text: histograms travel as `integer[]`/`bigint[]`, times as
//! `timestamptz`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres_types::Type;
use tokio_postgres::binary_copy::BinaryCopyInWriter;

use crate::StoreError;

/// Starts `COPY table (columns) FROM STDIN (FORMAT binary)`; rows are written through the
/// returned writer (pin it) in `columns`' order and types, and `finish` says how many.
pub(crate) async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &[(&str, Type)],
) -> Result<BinaryCopyInWriter, StoreError> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))
        .await?;
    Ok(BinaryCopyInWriter::new(sink, &types))
}

/// A `timestamptz` of whole Unix seconds, as `to_timestamp(s)` makes it.
pub(crate) fn timestamp(unix_s: i64) -> SystemTime {
    let offset = Duration::from_secs(unix_s.unsigned_abs());
    if unix_s >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_on_both_sides_of_the_epoch() {
        assert_eq!(
            timestamp(1_764_806_400).duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_764_806_400)
        );
        assert_eq!(
            UNIX_EPOCH.duration_since(timestamp(-60)).unwrap(),
            Duration::from_secs(60)
        );
    }
}
