-- Each batch's rows in sw_recent_aggregates carry a number from sw_recent_seq (`seq`, one a
-- batch, taken as its rows are written), so the alert leader reads only the batches committed
-- since its last round (store/src/recent_cache.rs) instead of its rules' whole windows every
-- second: at 88k spans/s the default rules re-read about 220k rows (with their histograms) a
-- second, half of them again the next second (docs/benchmarks.md). Rows written before this
-- migration, or by a collector from before it, have no number: the leader reads them when it
-- builds its cache anew (once a minute).
-- One statement (a DO block): Citus forwards a multi-statement string whole.
DO $$
BEGIN
    CREATE SEQUENCE sw_recent_seq;
    ALTER TABLE sw_recent_aggregates ADD COLUMN seq bigint;
    CREATE INDEX sw_recent_aggregates_seq ON sw_recent_aggregates (seq);
END
$$;
