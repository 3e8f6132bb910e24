-- Hourly rollup of sw_dependency_minutes for the dependencies page over long windows, as
-- sw_service_hours (migration 0008) is for the overview: one row per (hour, class, peer) with
-- the same columns, summed and merged; the page reads the whole hours of its window from here
-- and the minutes at its two ends from sw_dependency_minutes. Kept by store_batch in the same
-- transaction, from the same rows. Partitioned by day like its siblings.

CREATE TABLE sw_dependency_hours (
    hour        timestamptz NOT NULL,
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
    hist_packed bytea       NOT NULL,
    PRIMARY KEY (hour, class, peer)
) PARTITION BY RANGE (hour);

-- One partition beside each existing sw_dependency_minutes partition, with the same bounds.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'sw_dependency_minutes'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_dependency_hours %s',
                       replace(r.name, 'sw_dependency_minutes_', 'sw_dependency_hours_'), r.bound);
    END LOOP;
END
$$;

-- Backfill from the minute rollup.
WITH totals AS (
    SELECT date_trunc('hour', minute) AS hour, class, peer,
           sum(count)::int8 AS count, sum(errors)::int8 AS errors, sum(sum_ns)::int8 AS sum_ns,
           sum(http_5xx)::int8 AS http_5xx, sum(http_503)::int8 AS http_503,
           sum(hist_zero)::int8 AS hist_zero
      FROM sw_dependency_minutes
     GROUP BY 1, class, peer
), buckets AS (
    SELECT date_trunc('hour', minute) AS hour, class, peer, k, sum(c)::int8 AS c
      FROM sw_dependency_minutes, unnest(hist_keys, hist_counts) AS u(k, c)
     GROUP BY 1, class, peer, k
), hists AS (
    SELECT hour, class, peer, array_agg(k ORDER BY k) AS keys, array_agg(c ORDER BY k) AS counts
      FROM buckets
     GROUP BY hour, class, peer
)
INSERT INTO sw_dependency_hours
    (hour, class, peer, count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_keys,
     hist_counts, hist_packed)
SELECT t.hour, t.class, t.peer, t.count, t.errors, t.sum_ns, t.http_5xx, t.http_503,
       t.hist_zero, coalesce(h.keys, '{}'), coalesce(h.counts, '{}'),
       sw_hist_pack(coalesce(h.keys, '{}'), coalesce(h.counts, '{}'))
  FROM totals t
  LEFT JOIN hists h USING (hour, class, peer);
