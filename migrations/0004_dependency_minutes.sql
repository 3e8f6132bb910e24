-- Per-minute rollup of the dependency aggregates: one row per (minute, class, peer) for the
-- dependency classes (db, redis, http_client, messaging), every service, operation and status
-- class merged. The dependencies page reads it instead of sw_aggregates (a tenth of the rows
-- and a third of the histogram buckets per hour in the benchmark); it is kept by store_batch in
-- the same transaction as sw_aggregates, so the two always agree:
--   count, errors, sum_ns, hist_* = the sums / merged histograms of the sw_aggregates rows;
--   http_5xx / http_503 = the count of rows whose status_class is 500–599 / exactly 503.
-- The histogram is kept twice: as arrays, which the upsert merges, and packed into one bytea
-- (generated from the arrays), which is what the page reads: PostgreSQL sends an array element
-- by element through a send function each, a bytea in one copy (4x faster to read an hour).
-- Partitioned by day like sw_aggregates; partitions are created and dropped with its own.

-- A histogram packed for reading: (key int4, count int8) pairs, big-endian, keys ascending.
CREATE FUNCTION sw_hist_pack(keys integer[], counts bigint[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(int4send(k) || int8send(c), ''::bytea ORDER BY o), ''::bytea)
    FROM unnest(keys, counts) WITH ORDINALITY AS u(k, c, o)
$$;

CREATE TABLE sw_dependency_minutes (
    minute      timestamptz NOT NULL,
    class       text        NOT NULL,
    peer        text        NOT NULL,
    count       bigint      NOT NULL,
    errors      bigint      NOT NULL,
    sum_ns      bigint      NOT NULL,
    http_5xx    bigint      NOT NULL,
    http_503    bigint      NOT NULL,
    hist_zero   bigint      NOT NULL,
    hist_keys   integer[]   NOT NULL,
    hist_counts bigint[]    NOT NULL,
    hist_packed bytea       NOT NULL GENERATED ALWAYS AS (sw_hist_pack(hist_keys, hist_counts)) STORED,
    PRIMARY KEY (minute, class, peer)
) PARTITION BY RANGE (minute);

-- One partition beside each existing sw_aggregates partition, with the same bounds.
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
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_dependency_minutes %s',
                       replace(r.name, 'sw_aggregates_', 'sw_dependency_minutes_'), r.bound);
    END LOOP;
END
$$;

-- Backfill from what is stored: one pass over the dependency rows for the totals, one over
-- their buckets for the histograms.
WITH totals AS (
    SELECT minute, class, peer,
           sum(count)::int8 AS count, sum(errors)::int8 AS errors, sum(sum_ns)::int8 AS sum_ns,
           (sum(count) FILTER (WHERE http BETWEEN 500 AND 599))::int8 AS http_5xx,
           (sum(count) FILTER (WHERE http = 503))::int8 AS http_503,
           sum(hist_zero)::int8 AS hist_zero
      FROM sw_aggregates,
           LATERAL (SELECT CASE WHEN status_class ~ '^[0-9]{1,5}$' THEN status_class::int END) AS s(http)
     WHERE class IN ('db', 'redis', 'http_client', 'messaging')
     GROUP BY minute, class, peer
), buckets AS (
    SELECT minute, class, peer, k, sum(c)::int8 AS c
      FROM sw_aggregates, unnest(hist_keys, hist_counts) AS u(k, c)
     WHERE class IN ('db', 'redis', 'http_client', 'messaging')
     GROUP BY minute, class, peer, k
), hists AS (
    SELECT minute, class, peer, array_agg(k ORDER BY k) AS keys, array_agg(c ORDER BY k) AS counts
      FROM buckets
     GROUP BY minute, class, peer
)
INSERT INTO sw_dependency_minutes
    (minute, class, peer, count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_keys, hist_counts)
SELECT t.minute, t.class, t.peer, t.count, t.errors, t.sum_ns,
       coalesce(t.http_5xx, 0), coalesce(t.http_503, 0), t.hist_zero,
       coalesce(h.keys, '{}'), coalesce(h.counts, '{}')
  FROM totals t
  LEFT JOIN hists h USING (minute, class, peer);
