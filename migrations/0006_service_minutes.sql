-- Per-minute rollup of each service's aggregates for the overview: one row per (minute,
-- service, entry), where entry is 'http_server' for the service's server spans and 'other' for
-- all its other spans, every operation, peer and status class merged. The overview measures a
-- service by its server spans when it has any, and by all its spans otherwise; over 24 hours it
-- read every per-minute aggregate row (0.7–1 s in the benchmark), and reads a few rows per
-- service and minute from here. Kept by store_batch in the same transaction as sw_aggregates,
-- exactly as sw_dependency_minutes is (migrations 0004, 0005):
--   count, errors, sum_ns, hist_* = the sums / merged histograms of the sw_aggregates rows;
--   http_5xx / http_503 = the count of rows whose status_class is 500–599 / exactly 503.
-- Partitioned by day like sw_aggregates; partitions are created and dropped with its own.

CREATE TABLE sw_service_minutes (
    minute      timestamptz NOT NULL,
    service     text        NOT NULL,
    entry       text        NOT NULL,
    count       bigint      NOT NULL,
    errors      bigint      NOT NULL,
    sum_ns      bigint      NOT NULL,
    http_5xx    bigint      NOT NULL,
    http_503    bigint      NOT NULL,
    hist_zero   bigint      NOT NULL,
    hist_keys   integer[]   NOT NULL,
    hist_counts bigint[]    NOT NULL,
    hist_packed bytea       NOT NULL,
    PRIMARY KEY (minute, service, entry)
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
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_service_minutes %s',
                       replace(r.name, 'sw_aggregates_', 'sw_service_minutes_'), r.bound);
    END LOOP;
END
$$;

-- Backfill from what is stored: one pass over the rows for the totals, one over their buckets
-- for the histograms.
WITH keyed AS (
    SELECT a.*, CASE WHEN class = 'http_server' THEN 'http_server' ELSE 'other' END AS entry,
           CASE WHEN status_class ~ '^[0-9]{1,5}$' THEN status_class::int END AS http
      FROM sw_aggregates a
), totals AS (
    SELECT minute, service, entry,
           sum(count)::int8 AS count, sum(errors)::int8 AS errors, sum(sum_ns)::int8 AS sum_ns,
           (sum(count) FILTER (WHERE http BETWEEN 500 AND 599))::int8 AS http_5xx,
           (sum(count) FILTER (WHERE http = 503))::int8 AS http_503,
           sum(hist_zero)::int8 AS hist_zero
      FROM keyed
     GROUP BY minute, service, entry
), buckets AS (
    SELECT minute, service, entry, k, sum(c)::int8 AS c
      FROM keyed, unnest(hist_keys, hist_counts) AS u(k, c)
     GROUP BY minute, service, entry, k
), hists AS (
    SELECT minute, service, entry, array_agg(k ORDER BY k) AS keys, array_agg(c ORDER BY k) AS counts
      FROM buckets
     GROUP BY minute, service, entry
)
INSERT INTO sw_service_minutes
    (minute, service, entry, count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_keys,
     hist_counts, hist_packed)
SELECT t.minute, t.service, t.entry, t.count, t.errors, t.sum_ns,
       coalesce(t.http_5xx, 0), coalesce(t.http_503, 0), t.hist_zero,
       coalesce(h.keys, '{}'), coalesce(h.counts, '{}'),
       sw_hist_pack(coalesce(h.keys, '{}'), coalesce(h.counts, '{}'))
  FROM totals t
  LEFT JOIN hists h USING (minute, service, entry);
