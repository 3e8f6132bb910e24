-- sw_aggregates rows are appended, one per key and batch, instead of upserted: at the real
-- ingest shape the upsert was the busiest statement of a batch on CPU (24 % of busy backend
-- samples), most of it merging two histograms per row in SQL (sw_hist_merge_keys/_counts,
-- about 46 µs a row), and every agent of a service waited on the rows the others held until
-- they committed. Readers already add rows up per key; the collector merges a key's rows
-- into one a few seconds later (store/src/compaction.rs). The primary key becomes an index on
-- (minute, service), which readers and the compaction filter on: two columns, so that the
-- names PostgreSQL makes up for the partitions' indexes stay short enough for Citus to add a
-- shard id (with all six columns it refused them as too long).
-- One statement (a DO block): Citus forwards a multi-statement string whole.
DO $$
BEGIN
    ALTER TABLE sw_aggregates DROP CONSTRAINT sw_aggregates_pkey;
    CREATE INDEX sw_aggregates_minute_service ON sw_aggregates (minute, service);
END
$$;
