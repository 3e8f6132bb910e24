-- sw_recent_aggregates rows are appended, one per key and batch, instead of merged into one
-- row per key and 5-second bucket: the agents of a service send at the same moments, so most
-- rows of a batch met another agent's row in the same bucket, and each such upsert merged two
-- histograms in SQL (sw_hist_merge_keys and _counts: about 46 µs a row, the single costliest
-- part of a batch's transaction at the real shape). Readers already merge rows per group
-- (Store::recent_groups), and rows live 15 minutes, so the extra rows cost little. The
-- primary key goes; an index on the arrival time serves readers and pruning.
-- One statement (a DO block): Citus forwards a multi-statement string whole.
DO $$
BEGIN
    ALTER TABLE sw_recent_aggregates DROP CONSTRAINT sw_recent_aggregates_pkey;
    CREATE INDEX sw_recent_aggregates_arrived ON sw_recent_aggregates (arrived);
END
$$;
