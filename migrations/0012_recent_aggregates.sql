-- Aggregates by when they arrived, in 5-second buckets, kept for 15 minutes: what alert rules
-- read to see the last seconds of traffic. Per-minute rows (sw_aggregates) cannot say "the
-- last 20 seconds": a minute row holds the whole minute, so a rule over it fires late on a
-- fresh incident and clears only after the next minute boundary (up to ~80 s after the end).
-- Agents send each minute's aggregates as deltas every flush (1 s), so the deltas that arrived
-- in a bucket count the spans that ended shortly before it: every span once, sampled or not.
-- Written in the batch's transaction (a duplicate batch writes nothing here either); rows
-- whose minute is over two minutes old are not written (a replayed spool is not "now").
CREATE TABLE sw_recent_aggregates (
    arrived      timestamptz NOT NULL,
    service      text        NOT NULL,
    class        text        NOT NULL,
    peer         text        NOT NULL,
    operation    text        NOT NULL,
    status_class text        NOT NULL,
    count        bigint      NOT NULL,
    errors       bigint      NOT NULL,
    hist_zero    bigint      NOT NULL,
    hist_keys    integer[]   NOT NULL,
    hist_counts  bigint[]    NOT NULL,
    PRIMARY KEY (arrived, service, class, peer, operation, status_class)
);
