-- Probe and host samples summed per minute and per hour (`grain` 60 or 3600 seconds), kept at
-- ingest in the batch's transaction (store/src/sample_rollups.rs), so the databases and hosts
-- pages read a row per (database, role, agent) or (agent, host) and step instead of every raw
-- sample: over 7 days of 100 databases probed every 10 s, 16,800 hour rows instead of 6M
-- samples. The raw samples stay for the read API, the alert rules and recurrence.
--
-- `minutes` marks the minutes of the bucket that had a sample (bit i = minute i of the hour;
-- a minute row sets one bit): the heatmap draws which minutes of each day were probed from the
-- hour rows alone. Retention deletes old rows with the raw samples (store/src/partitions.rs).
CREATE TABLE sw_probe_rollups (
    grain           integer          NOT NULL,
    time            timestamptz      NOT NULL,
    database        text             NOT NULL,
    role            text             NOT NULL,
    agent_id        text             NOT NULL,
    samples         bigint           NOT NULL,
    failures        bigint           NOT NULL,
    refused         bigint           NOT NULL,
    -- successful connects of at least 100 ms (store::SLOW_CONNECT_MS)
    slow            bigint           NOT NULL,
    -- probes with a connect time, and the sum and largest of those times
    connected       bigint           NOT NULL,
    connect_us_sum  bigint           NOT NULL,
    connect_us_max  bigint,
    lag_seconds_max double precision,
    minutes         bit(60)          NOT NULL,
    PRIMARY KEY (grain, time, database, role, agent_id)
);
CREATE INDEX sw_probe_rollups_database ON sw_probe_rollups (grain, database, time);
-- Minutes with failures or slow connects: the heatmap's coloured cells.
CREATE INDEX sw_probe_rollups_bad ON sw_probe_rollups (time)
    WHERE grain = 60 AND (failures > 0 OR slow > 0);

CREATE TABLE sw_host_rollups (
    grain           integer          NOT NULL,
    time            timestamptz      NOT NULL,
    agent_id        text             NOT NULL,
    host            text             NOT NULL,
    samples         bigint           NOT NULL,
    cpu_percent_sum double precision NOT NULL,
    mem_used_sum    double precision NOT NULL,
    mem_total_max   bigint           NOT NULL,
    net_rx_sum      double precision NOT NULL,
    net_tx_sum      double precision NOT NULL,
    load1_sum       double precision NOT NULL,
    PRIMARY KEY (grain, time, agent_id, host)
);

-- The samples stored before this migration.
INSERT INTO sw_probe_rollups
SELECT g.grain, to_timestamp(floor(extract(epoch FROM s.time) / g.grain) * g.grain), s.database,
       s.role, s.agent_id, count(*), count(*) FILTER (WHERE s.failure <> 'none'),
       count(*) FILTER (WHERE s.failure = 'refused'),
       count(*) FILTER (WHERE s.failure = 'none' AND s.connect_us >= 100000),
       count(s.connect_us), coalesce(sum(s.connect_us), 0)::int8, max(s.connect_us),
       max(s.lag_seconds),
       bit_or(B'1'::bit(60) >> (floor(extract(epoch FROM s.time) / 60)::int8 % 60)::int4)
  FROM sw_probe_samples s CROSS JOIN (VALUES (60), (3600)) AS g(grain)
 GROUP BY 1, 2, 3, 4, 5;

INSERT INTO sw_host_rollups
SELECT g.grain, to_timestamp(floor(extract(epoch FROM s.time) / g.grain) * g.grain), s.agent_id,
       s.host, count(*), sum(s.cpu_percent), sum(s.mem_used_bytes)::float8,
       max(s.mem_total_bytes), sum(s.net_rx_bytes_per_s)::float8,
       sum(s.net_tx_bytes_per_s)::float8, sum(s.load1)
  FROM sw_host_samples s CROSS JOIN (VALUES (60), (3600)) AS g(grain)
 GROUP BY 1, 2, 3, 4;
