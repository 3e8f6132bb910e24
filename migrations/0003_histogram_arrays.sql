-- Histograms as two parallel arrays (bucket keys ascending, counts) plus the zero count,
-- instead of a JSON object: PostgreSQL sends arrays in binary and the dashboard reads them
-- without parsing text, and the upsert merges them without building JSON.
ALTER TABLE sw_aggregates
    ADD COLUMN hist_zero   bigint    NOT NULL DEFAULT 0,
    ADD COLUMN hist_keys   integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN hist_counts bigint[]  NOT NULL DEFAULT '{}';

UPDATE sw_aggregates SET
    hist_zero   = coalesce((histogram->>'zero')::bigint, 0),
    hist_keys   = coalesce((SELECT array_agg(key::integer ORDER BY key::integer)
                              FROM jsonb_each_text(histogram) WHERE key <> 'zero'), '{}'),
    hist_counts = coalesce((SELECT array_agg(value::bigint ORDER BY key::integer)
                              FROM jsonb_each_text(histogram) WHERE key <> 'zero'), '{}');

ALTER TABLE sw_aggregates DROP COLUMN histogram;
DROP FUNCTION sw_hist_merge(jsonb, jsonb);

-- The merged keys of two histograms, ascending.
CREATE FUNCTION sw_hist_merge_keys(ak integer[], bk integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(k ORDER BY k), '{}')
    FROM (SELECT DISTINCT k FROM unnest(ak || bk) AS u(k)) d
$$;

-- The merged counts of two histograms, in the order of sw_hist_merge_keys.
CREATE FUNCTION sw_hist_merge_counts(ak integer[], ac bigint[], bk integer[], bc bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(s ORDER BY k), '{}')
    FROM (
        SELECT k, sum(c)::bigint AS s
        FROM (SELECT * FROM unnest(ak, ac) UNION ALL SELECT * FROM unnest(bk, bc)) AS u(k, c)
        GROUP BY k
    ) g
$$;

-- BRIN ranges are summarized as they fill (autovacuum work items), not only at VACUUM:
-- otherwise a time-range scan of today's partition reads all of it until autovacuum runs.
DROP INDEX sw_spans_start;
CREATE INDEX sw_spans_start ON sw_spans USING brin (start_ns) WITH (pages_per_range = 32, autosummarize = on);
