-- Probe samples summed per 5 minutes too (`grain` 300 in sw_probe_rollups, beside the minute
-- and hour rows of 0021), kept at ingest by the same upsert: the heatmap's 5-minute slices
-- with failures or slow connects are read as these rows through the partial index below,
-- instead of each slice adding up its minute rows (10,120 index lookups over 7 days of 100
-- databases; 0.2 % random timeouts put nearly every failed probe in a slice of its own).
-- `minutes` marks the minutes of the hour the row had samples in, as for the minute rows.
--
-- The rows of the minute rollup stored before this migration, summed per 5 minutes.
INSERT INTO sw_probe_rollups
SELECT 300, to_timestamp(floor(extract(epoch FROM time) / 300) * 300), database, role, agent_id,
       sum(samples), sum(failures), sum(refused), sum(slow), sum(connected), sum(connect_us_sum),
       max(connect_us_max), max(lag_seconds_max), bit_or(minutes)
  FROM sw_probe_rollups
 WHERE grain = 60
 GROUP BY 2, 3, 4, 5;

-- One DDL statement through EXECUTE: on Citus the workers receive its text alone.
DO $$
BEGIN
    EXECUTE 'CREATE INDEX IF NOT EXISTS sw_probe_rollups_bad_slices ON sw_probe_rollups (time)
                 INCLUDE (database, samples, failures, slow)
                 WHERE grain = 300 AND (failures > 0 OR slow > 0)';
END
$$;
