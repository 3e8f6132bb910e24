-- Dependency calls per server operation: how often, and how long in total, each entry
-- operation of a service (`GET /timetable`) called each (class, peer) in a minute. The agent
-- joins every call to the server span of its service and trace (agent/src/pipeline/entries.rs)
-- and ships deltas, which are added up here like sw_aggregates. Incident causes divide them by
-- the operation's requests: the time a peer adds to one endpoint, not to its whole service.
-- Partitioned by day like sw_aggregates; partitions are created and dropped with its own.
CREATE TABLE sw_entry_calls (
    minute  timestamptz NOT NULL,
    service text        NOT NULL,
    entry   text        NOT NULL,
    class   text        NOT NULL,
    peer    text        NOT NULL,
    count   bigint      NOT NULL,
    sum_ns  bigint      NOT NULL,
    PRIMARY KEY (service, minute, entry, class, peer)
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
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_entry_calls %s',
                       replace(r.name, 'sw_aggregates_', 'sw_entry_calls_'), r.bound);
    END LOOP;
END
$$;
