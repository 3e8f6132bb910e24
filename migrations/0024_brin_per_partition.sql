-- The BRIN indexes on time move from the partitioned parents to each partition. An index
-- defined on a parent is part of every partition and cannot be dropped from one, and
-- columnar storage (Citus `alter_table_set_access_method(partition, 'columnar')`, for old
-- days) takes B-tree and hash indexes only: a parent BRIN made every old partition
-- unconvertible. Same index, same plans; store/src/partitions.rs creates it with each new
-- partition, and an old partition can drop its own before it is converted.
DROP INDEX IF EXISTS sw_spans_start;
DROP INDEX IF EXISTS sw_metric_minutes_minute;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname::text AS name, p.relname::text AS parent
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname IN ('sw_spans', 'sw_metric_minutes')
    LOOP
        IF r.parent = 'sw_spans' THEN
            EXECUTE format('CREATE INDEX %I ON %I USING brin (start_ns)
                                WITH (pages_per_range = 32, autosummarize = on)',
                           r.name || '_start', r.name);
        ELSE
            EXECUTE format('CREATE INDEX %I ON %I USING brin (minute)', r.name || '_minute', r.name);
        END IF;
    END LOOP;
END
$$;
