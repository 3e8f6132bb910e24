-- Rollup deltas (store/src/rollups.rs): a batch no longer upserts the service and dependency
-- rollups itself. Every batch of every agent calling a peer rewrote that peer's minute and
-- hour rows, and held their locks to its commit: at 50 agents, half the busy time of the
-- database was spent waiting for those row locks (docs/benchmarks.md, "Real shape"). A batch
-- now appends its rollup rows here, conflict-free, and one writer at a time folds them into
-- sw_service_minutes / sw_service_hours (rollup 1) and sw_dependency_minutes /
-- sw_dependency_hours (rollup 0) every second, deleting what it folded in the same
-- transaction. Readers add the deltas not yet folded, so a read sees every stored batch once.
CREATE TABLE sw_rollup_deltas (
    rollup      smallint    NOT NULL,
    minute      timestamptz NOT NULL,
    k1          text        NOT NULL,
    k2          text        NOT NULL,
    count       bigint      NOT NULL,
    errors      bigint      NOT NULL,
    sum_ns      bigint      NOT NULL,
    http_5xx    bigint      NOT NULL,
    http_503    bigint      NOT NULL,
    hist_zero   bigint      NOT NULL,
    hist_packed bytea       NOT NULL
);
CREATE INDEX sw_rollup_deltas_minute ON sw_rollup_deltas (rollup, minute);
