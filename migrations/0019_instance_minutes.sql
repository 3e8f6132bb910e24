-- Server requests per service, agent and minute: how many, how many failed or answered 5xx,
-- and their total time. Written at ingest from the batch's http_server aggregates (the agent
-- that sent them is the app server they ran on), read by incident causes to tell when one
-- instance of a service answers most of its errors or its slow requests.
-- Partitioned by day like sw_aggregates; partitions are created and dropped with its own.
CREATE TABLE sw_instance_minutes (
    minute   timestamptz NOT NULL,
    service  text        NOT NULL,
    agent_id text        NOT NULL,
    requests bigint      NOT NULL,
    errors   bigint      NOT NULL,
    http_5xx bigint      NOT NULL,
    sum_ns   bigint      NOT NULL,
    PRIMARY KEY (service, minute, agent_id)
) PARTITION BY RANGE (minute);

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
        EXECUTE format('CREATE TABLE %I PARTITION OF sw_instance_minutes %s',
                       replace(r.name, 'sw_aggregates_', 'sw_instance_minutes_'), r.bound);
    END LOOP;
END
$$;
