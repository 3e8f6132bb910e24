-- Values PostgreSQL compresses itself (rows over about 2 KB: the histogram arrays of the
-- aggregates and rollups, packed histograms, long statements) are compressed with lz4 instead
-- of pglz from now on: at the real ingest shape pglz_compress was the busiest function of the
-- database (7 % of its CPU), and lz4 compresses several times faster for about the same size.
-- Every compressible column of the sw_ tables and their partitions; new partitions inherit
-- their parent's setting. Rows already stored keep their compression (both decode).
-- A server built without lz4 (or a distributed table that refuses the change) keeps pglz:
-- the error is reported as a notice and the migration goes on.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname::text AS tab, a.attname::text AS col
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = current_schema()
           AND c.relname LIKE 'sw\_%'
           AND c.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attstorage IN ('x', 'm')
         ORDER BY 1, 2
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET COMPRESSION lz4', r.tab, r.col);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'compressed values stay pglz: %', SQLERRM;
END
$$;
