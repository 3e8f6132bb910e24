-- OTLP metrics and logs the agents forward (model/src/metric.rs, model/src/log.rs).
--
-- sw_metric_minutes: one row per series (name, service, instance, kind, unit, attributes),
-- minute and agent. An agent may ship several parts of the same minute in different batches;
-- the batch transaction merges them into the row exactly like `MetricPoint::merge` (counts
-- and sums add up, min and max widen, the later `last` wins, buckets add when the bounds are
-- equal; a part that counted nothing brings only its `last`), and a batch is claimed once in
-- sw_batches, so the merge is exact. The attributes
-- (up to 16 keys of 128 bytes and values of 256) can exceed a B-tree entry (2,704 bytes):
-- the key holds their MD5 (of jsonb's canonical text), the row the attributes themselves.
-- A part with neither a count nor a last value (count 0, last_ns 0) is not written.
CREATE TABLE sw_metric_minutes (
    minute         timestamptz NOT NULL,
    name           text        NOT NULL,
    service        text        NOT NULL,
    instance       text        NOT NULL,
    kind           smallint    NOT NULL,
    unit           text        NOT NULL,
    attributes_md5 bytea       NOT NULL,
    agent_id       text        NOT NULL,
    attributes     jsonb       NOT NULL,
    count          bigint      NOT NULL,
    sum            float8      NOT NULL,
    min            float8      NOT NULL,
    max            float8      NOT NULL,
    last           float8      NOT NULL,
    last_ns        bigint      NOT NULL,
    bounds         float8[]    NOT NULL,
    buckets        bigint[]    NOT NULL,
    -- Readers find a metric's series by (name, service, minute): the key's first columns.
    PRIMARY KEY (name, service, minute, instance, kind, unit, attributes_md5, agent_id)
) PARTITION BY RANGE (minute);

-- The metric list of a window (every name, any service) scans minutes only.
CREATE INDEX sw_metric_minutes_minute ON sw_metric_minutes USING brin (minute);

-- Element-wise sum of two histograms' bucket counts of the same bounds.
CREATE FUNCTION sw_add_buckets(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x + y ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

-- sw_logs: the log records agents keep (WARN and above, or carrying a trace id), appended
-- (a batch is stored once: no key). Times are microseconds (timestamptz).
CREATE TABLE sw_logs (
    time            timestamptz NOT NULL,
    agent_id        text        NOT NULL,
    service         text        NOT NULL,
    instance        text        NOT NULL,
    severity_number smallint    NOT NULL,
    severity_text   text        NOT NULL,
    body            text        NOT NULL,
    trace_id        bytea,
    span_id         bytea,
    attributes      jsonb       NOT NULL
) PARTITION BY RANGE (time);

-- A trace's logs (hash: 4 bytes a row, as for sw_spans), and a service's newest records.
CREATE INDEX sw_logs_trace ON sw_logs USING hash (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX sw_logs_service_time ON sw_logs (service, time);

-- One partition of each beside each existing sw_aggregates partition, with the same bounds;
-- later ones are created and dropped with the aggregates' (store/src/partitions.rs).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'sw_aggregates'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_metric_minutes %s',
                       replace(r.name, 'sw_aggregates_', 'sw_metric_minutes_'), r.bound);
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_logs %s',
                       replace(r.name, 'sw_aggregates_', 'sw_logs_'), r.bound);
    END LOOP;
END
$$;
