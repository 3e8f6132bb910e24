-- The rollup's packed histogram is no longer generated from its arrays on every write (packing
-- in SQL was about 70 % of the cost of inserting a rollup row): store_batch sends new rows
-- already packed, and a conflicting row is merged and packed in one pass
-- (sw_hist_merge_packed) instead of two merges and a pack. The values stay as they are.
ALTER TABLE sw_dependency_minutes ALTER COLUMN hist_packed DROP EXPRESSION;

-- Two histograms merged: keys ascending, their counts, and the same packed as sw_hist_pack does.
CREATE FUNCTION sw_hist_merge_packed(ak integer[], ac bigint[], bk integer[], bc bigint[],
                                     OUT keys integer[], OUT counts bigint[], OUT packed bytea)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(k ORDER BY k), '{}'),
           coalesce(array_agg(s ORDER BY k), '{}'),
           coalesce(string_agg(int4send(k) || int8send(s), ''::bytea ORDER BY k), ''::bytea)
    FROM (
        SELECT k, sum(c)::bigint AS s
        FROM (SELECT * FROM unnest(ak, ac) UNION ALL SELECT * FROM unnest(bk, bc)) AS u(k, c)
        GROUP BY k
    ) g
$$;
