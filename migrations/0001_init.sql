-- Stormwatch schema, version 1.
--
-- Design notes (see ARCHITECTURE.md, "Storage"):
-- * sw_spans and sw_aggregates are range-partitioned by day; the collector creates partitions
--   ahead of time and on demand, and retention drops whole partitions (no DELETE, no bloat).
-- * sw_spans is the hot table: BRIN on time (tiny, cheap to maintain for append-mostly data)
--   and a hash index on trace_id for trace lookups. No primary key: a span is stored once
--   because its batch is stored once (sw_batches), which keeps COPY fast.
-- * Every table that would be distributed under Citus carries its distribution column
--   (trace_id for spans; the aggregate key's service for aggregates) so the move needs no
--   redesign.

CREATE TABLE sw_batches (
    agent_id    text        NOT NULL,
    instance    text        NOT NULL,
    sequence    bigint      NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    spans       integer     NOT NULL,
    PRIMARY KEY (agent_id, instance, sequence)
);
CREATE INDEX sw_batches_received_at ON sw_batches (received_at);

CREATE TABLE sw_agents (
    agent_id       text        PRIMARY KEY,
    instance       text        NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    batches        bigint      NOT NULL DEFAULT 0,
    spans_received bigint      NOT NULL DEFAULT 0,
    spans_kept     bigint      NOT NULL DEFAULT 0,
    spans_dropped  bigint      NOT NULL DEFAULT 0,
    spool_bytes    bigint      NOT NULL DEFAULT 0
);

CREATE TABLE sw_spans (
    start_ns       bigint   NOT NULL,
    duration_ns    bigint   NOT NULL,
    trace_id       bytea    NOT NULL,
    span_id        bytea    NOT NULL,
    parent_span_id bytea,
    service        text     NOT NULL,
    instance       text     NOT NULL,
    operation      text     NOT NULL,
    kind           text     NOT NULL,
    class          text     NOT NULL,
    is_error       boolean  NOT NULL,
    status_message text,
    http_status    smallint,
    peer           text,
    db_system      text,
    db_role        text     NOT NULL,
    statement      text,
    rows           bigint,
    attributes     jsonb,
    kept           text     NOT NULL,
    flags          integer  NOT NULL DEFAULT 0,
    replica_lag_ms bigint
) PARTITION BY RANGE (start_ns);
CREATE INDEX sw_spans_start ON sw_spans USING brin (start_ns) WITH (pages_per_range = 32);
CREATE INDEX sw_spans_trace ON sw_spans USING hash (trace_id);

-- Histogram buckets as a JSON object {"<bucket key>": count, "zero": count}; see
-- model/src/histogram.rs for the bucket mapping. sw_hist_merge adds two of them.
CREATE FUNCTION sw_hist_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, s), '{}'::jsonb)
    FROM (
        SELECT k, sum(v::bigint) AS s
        FROM (
            SELECT key AS k, value AS v FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT key, value FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) both_sides
        GROUP BY k
    ) summed
$$;

CREATE TABLE sw_aggregates (
    minute       timestamptz NOT NULL,
    service      text        NOT NULL,
    class        text        NOT NULL,
    peer         text        NOT NULL,
    operation    text        NOT NULL,
    status_class text        NOT NULL,
    count        bigint      NOT NULL,
    errors       bigint      NOT NULL,
    sum_ns       bigint      NOT NULL,
    histogram    jsonb       NOT NULL,
    PRIMARY KEY (minute, service, class, peer, operation, status_class)
) PARTITION BY RANGE (minute);

CREATE TABLE sw_host_samples (
    time             timestamptz      NOT NULL,
    agent_id         text             NOT NULL,
    host             text             NOT NULL,
    cpu_percent      double precision NOT NULL,
    mem_used_bytes   bigint           NOT NULL,
    mem_total_bytes  bigint           NOT NULL,
    load1            double precision NOT NULL,
    load5            double precision NOT NULL,
    load15           double precision NOT NULL,
    net_rx_bytes_per_s bigint         NOT NULL,
    net_tx_bytes_per_s bigint         NOT NULL,
    process_count    integer          NOT NULL,
    disks            jsonb            NOT NULL,
    app_cpu_percent  double precision,
    app_rss_bytes    bigint,
    app_threads      integer
);
CREATE INDEX sw_host_samples_host_time ON sw_host_samples (host, time);
CREATE INDEX sw_host_samples_time ON sw_host_samples USING brin (time);

CREATE TABLE sw_probe_samples (
    time            timestamptz      NOT NULL,
    agent_id        text             NOT NULL,
    database        text             NOT NULL,
    engine          text             NOT NULL,
    role            text             NOT NULL,
    connect_us      bigint,
    query_us        bigint,
    failure         text             NOT NULL,
    failure_message text,
    lag_seconds     double precision,
    lag_bytes       bigint,
    replay_paused   boolean          NOT NULL,
    detail          jsonb            NOT NULL
);
CREATE INDEX sw_probe_samples_db_time ON sw_probe_samples (database, time);
CREATE INDEX sw_probe_samples_time ON sw_probe_samples USING brin (time);
