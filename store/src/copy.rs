//! Binary COPY into a table: how a batch appends its rows where nothing is merged on the way
//! in (spans, aggregates, recent aggregates). Values go as PostgreSQL's binary forms, so
//! neither side formats or parses text: histograms travel as `integer[]`/`bigint[]`, times as
//! `timestamptz`.
//!
//! Written here rather than with tokio-postgres' `BinaryCopyInWriter`, which hands its rows to
//! the connection 4 KiB at a time: a batch's 1 MiB of spans made about 270 hand-offs between
//! tasks and as many socket writes (the connection task was 15 % of the collector's CPU at
//! the real ingest shape). [`CopyIn`] encodes rows the same way, each value by its `ToSql`,
//! and sends them [`CHUNK_BYTES`] at a time.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use postgres_types::{IsNull, ToSql, Type};
use tokio_postgres::CopyInSink;

use crate::StoreError;

/// The binary COPY header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Encoded rows are sent to PostgreSQL once this many bytes are waiting.
pub(crate) const CHUNK_BYTES: usize = 128 * 1024;

/// A `COPY table (columns) FROM STDIN (FORMAT binary)` under way: rows go in with
/// [`CopyIn::write`], and [`CopyIn::finish`] ends it (dropped before, the COPY is aborted).
pub(crate) struct CopyIn {
    table: String,
    types: Vec<Type>,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
}

impl CopyIn {
    /// Starts the COPY; rows are written in `columns`' order and types.
    pub(crate) async fn start(
        tx: &tokio_postgres::Transaction<'_>,
        table: &str,
        columns: &[(&str, Type)],
    ) -> Result<CopyIn, StoreError> {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let sink = tx
            .copy_in(&format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                names.join(", ")
            ))
            .await?;
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        buf.put_slice(HEADER);
        Ok(CopyIn {
            table: table.to_owned(),
            types: columns.iter().map(|(_, t)| t.clone()).collect(),
            sink: Box::pin(sink),
            buf,
        })
    }

    /// Encodes one row, its values in the columns' order; sends what waits once it reaches
    /// [`CHUNK_BYTES`].
    pub(crate) async fn write(&mut self, row: &[&(dyn ToSql + Sync)]) -> Result<(), StoreError> {
        let encode = |why: String| StoreError::Encode {
            table: self.table.clone(),
            why,
        };
        if row.len() != self.types.len() {
            return Err(encode(format!(
                "{} values for {} columns",
                row.len(),
                self.types.len()
            )));
        }
        self.buf.put_i16(self.types.len() as i16);
        for (i, (value, ty)) in row.iter().zip(&self.types).enumerate() {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let len = match value
                .to_sql_checked(ty, &mut self.buf)
                .map_err(|e| encode(format!("column {}: {e}", i + 1)))?
            {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(self.buf.len() - at - 4)
                    .map_err(|_| encode(format!("column {}: value over 2 GiB", i + 1)))?,
            };
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        if self.buf.len() >= CHUNK_BYTES {
            let chunk = self.buf.split().freeze();
            self.sink.send(chunk).await?;
            self.buf.reserve(CHUNK_BYTES);
        }
        Ok(())
    }

    /// Sends the rest and ends the COPY; returns how many rows it stored.
    pub(crate) async fn finish(mut self) -> Result<u64, StoreError> {
        self.buf.put_i16(-1);
        let rest = self.buf.split().freeze();
        self.sink.send(rest).await?;
        Ok(self.sink.as_mut().finish().await?)
    }
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

    /// A real PostgreSQL: rows over several chunks all arrive, in order; a row of the wrong
    /// width or type is an error naming the table, not a panic.
    #[tokio::test]
    async fn rows_over_many_chunks_arrive_and_bad_rows_are_errors() {
        let url = stormwatch_testkit::fresh_database().await;
        let mut client = stormwatch_testkit::client_at(&url).await;
        client
            .batch_execute("CREATE TABLE t (n int8, label text, at timestamptz, ks int4[])")
            .await
            .unwrap();
        let columns = [
            ("n", Type::INT8),
            ("label", Type::TEXT),
            ("at", Type::TIMESTAMPTZ),
            ("ks", Type::INT4_ARRAY),
        ];
        let tx = client.transaction().await.unwrap();
        let mut copy = CopyIn::start(&tx, "t", &columns).await.unwrap();
        let label = "x".repeat(100);
        let rows = 5_000i64; // about 680 KB: five chunks and a rest
        for n in 0..rows {
            let keys = vec![n as i32, -1];
            let label = (n % 7 != 0).then_some(label.as_str());
            copy.write(&[&n, &label, &timestamp(n * 60), &keys])
                .await
                .unwrap();
        }
        assert_eq!(copy.finish().await.unwrap(), rows as u64);
        tx.commit().await.unwrap();
        let r = client
            .query_one(
                "SELECT count(*), sum(n)::int8, count(label), max(extract(epoch FROM at))::int8,
                        sum(ks[1]), bool_and(ks[2] = -1)
                   FROM t",
                &[],
            )
            .await
            .unwrap();
        let expected_sum: i64 = (0..rows).sum();
        assert_eq!(r.get::<_, i64>(0), rows);
        assert_eq!(r.get::<_, i64>(1), expected_sum);
        assert_eq!(
            r.get::<_, i64>(2),
            rows - (0..rows).filter(|n| n % 7 == 0).count() as i64
        );
        assert_eq!(r.get::<_, i64>(3), (rows - 1) * 60);
        assert_eq!(r.get::<_, i64>(4), expected_sum);
        assert!(r.get::<_, bool>(5));

        let tx = client.transaction().await.unwrap();
        let mut copy = CopyIn::start(&tx, "t", &columns).await.unwrap();
        let short = copy.write(&[&1i64, &"a"]).await.unwrap_err().to_string();
        assert!(short.contains("for t: 2 values for 4 columns"), "{short}");
        let wrong = copy
            .write(&[&"not a number", &"a", &timestamp(0), &vec![1i32]])
            .await
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("for t: column 1"), "{wrong}");
        drop(copy);
        tx.rollback().await.unwrap();
    }

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
