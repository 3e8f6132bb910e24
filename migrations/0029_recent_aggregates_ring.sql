-- sw_recent_aggregates becomes a ring of 20 list partitions, one a minute of arrival (`slot`,
-- the arrival minute modulo 20), and a partition whose minute has left the 15 minutes alert
-- rules read is emptied with TRUNCATE (store/src/recent.rs, `prune_recent`) instead of its rows
-- deleted. Every batch appends its aggregates here, so at 88k spans/s the table took about
-- 7,400 rows a second: deleting as many, and vacuuming the 7 GB this left behind, was the
-- steadiest work of the 30-minute soak that the short benchmark never reached
-- (docs/benchmarks.md). A fixed ring needs no DDL at run time; rows are moved over.
-- One statement (a DO block): Citus forwards a multi-statement string whole.
DO $$
BEGIN
    ALTER TABLE sw_recent_aggregates RENAME TO sw_recent_aggregates_old;
    ALTER INDEX sw_recent_aggregates_arrived RENAME TO sw_recent_aggregates_old_arrived;
    CREATE TABLE sw_recent_aggregates (
        LIKE sw_recent_aggregates_old INCLUDING DEFAULTS INCLUDING COMPRESSION,
        slot smallint NOT NULL
    ) PARTITION BY LIST (slot);
    FOR s IN 0..19 LOOP
        EXECUTE format('CREATE TABLE sw_recent_aggregates_s%s PARTITION OF sw_recent_aggregates
                            FOR VALUES IN (%s)', s, s);
    END LOOP;
    CREATE INDEX sw_recent_aggregates_arrived ON sw_recent_aggregates (arrived);
    INSERT INTO sw_recent_aggregates
        SELECT o.*, (floor(extract(epoch FROM o.arrived) / 60)::int8 % 20)::smallint
          FROM sw_recent_aggregates_old o;
    DROP TABLE sw_recent_aggregates_old;
END
$$;
