-- Flag counts (full-scan suspects, replica lag, connect failures) by when they arrived, in the
-- same 5-second buckets and for the same 15 minutes as sw_recent_aggregates (0012), so the
-- full-scan rule also sees the last seconds rather than whole minutes: it used to clear only
-- after the next minute boundary (66 s after the replica caught up in the demo).
CREATE TABLE sw_recent_flag_counts (
    arrived   timestamptz NOT NULL,
    service   text        NOT NULL,
    operation text        NOT NULL,
    peer      text        NOT NULL,
    flag      text        NOT NULL,
    count     bigint      NOT NULL,
    PRIMARY KEY (arrived, service, operation, peer, flag)
);
