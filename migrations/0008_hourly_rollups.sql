-- Hourly rollups of the per-minute service and dependency rollups, for the overview and the
-- dependencies page over long windows: sw_service_hours (hour, service, entry) from
-- sw_service_minutes, sw_dependency_hours (hour, class, peer) from sw_dependency_minutes, with
-- the same columns, summed and merged. Over 7 days the pages read some 50,000 minute rows each
-- (0.15–0.3 s, most of it PostgreSQL sending them); they now read the whole hours of their
-- window from here and only the minutes at its two ends from the minute rollups, so totals
-- stay exact to the minute. Kept by store_batch in the same transaction as the minute rollups,
-- from the same rows. Partitioned by day like their siblings; partitions are created and
-- dropped with them.

DO $migration$
DECLARE
    t record;
    r record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES ('sw_service_minutes', 'sw_service_hours', 'service', 'entry'),
                              ('sw_dependency_minutes', 'sw_dependency_hours', 'class', 'peer'))
                   AS v(minutes, hours, k1, k2)
    LOOP
        EXECUTE format(
            'CREATE TABLE %1$I (
                 hour        timestamptz NOT NULL,
                 %2$I        text        NOT NULL,
                 %3$I        text        NOT NULL,
                 count       bigint      NOT NULL,
                 errors      bigint      NOT NULL,
                 sum_ns      bigint      NOT NULL,
                 http_5xx    bigint      NOT NULL,
                 http_503    bigint      NOT NULL,
                 hist_zero   bigint      NOT NULL,
                 hist_keys   integer[]   NOT NULL,
                 hist_counts bigint[]    NOT NULL,
                 hist_packed bytea       NOT NULL,
                 PRIMARY KEY (hour, %2$I, %3$I)
             ) PARTITION BY RANGE (hour)', t.hours, t.k1, t.k2);
        -- One partition beside each partition of the minute rollup, with the same bounds.
        FOR r IN
            SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
              FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
              JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = t.minutes
        LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I %s',
                           replace(r.name, t.minutes || '_', t.hours || '_'), t.hours, r.bound);
        END LOOP;
        -- Backfill from the minute rollup: one pass for the totals, one over the buckets.
        EXECUTE format($backfill$
            WITH totals AS (
                SELECT date_trunc('hour', minute) AS hour, %3$I AS k1, %4$I AS k2,
                       sum(count)::int8 AS count, sum(errors)::int8 AS errors,
                       sum(sum_ns)::int8 AS sum_ns, sum(http_5xx)::int8 AS http_5xx,
                       sum(http_503)::int8 AS http_503, sum(hist_zero)::int8 AS hist_zero
                  FROM %1$I
                 GROUP BY 1, 2, 3
            ), buckets AS (
                SELECT date_trunc('hour', minute) AS hour, %3$I AS k1, %4$I AS k2, k,
                       sum(c)::int8 AS c
                  FROM %1$I, unnest(hist_keys, hist_counts) AS u(k, c)
                 GROUP BY 1, 2, 3, 4
            ), hists AS (
                SELECT hour, k1, k2, array_agg(k ORDER BY k) AS keys,
                       array_agg(c ORDER BY k) AS counts
                  FROM buckets
                 GROUP BY hour, k1, k2
            )
            INSERT INTO %2$I
                (hour, %3$I, %4$I, count, errors, sum_ns, http_5xx, http_503, hist_zero,
                 hist_keys, hist_counts, hist_packed)
            SELECT t.hour, t.k1, t.k2, t.count, t.errors, t.sum_ns, t.http_5xx, t.http_503,
                   t.hist_zero, coalesce(h.keys, '{}'), coalesce(h.counts, '{}'),
                   sw_hist_pack(coalesce(h.keys, '{}'), coalesce(h.counts, '{}'))
              FROM totals t
              LEFT JOIN hists h USING (hour, k1, k2)
        $backfill$, t.minutes, t.hours, t.k1, t.k2);
    END LOOP;
END
$migration$;
