-- Alert leadership fenced by an epoch, and notifications claimed before they are sent.
--
-- One row: the current alert leader. Taking leadership bumps `epoch`; every evaluation
-- write and every claim checks, in its own transaction, that the epoch is still the
-- writer's (SELECT ... FOR SHARE on this row), so a deposed leader's writes are refused.
-- `lease_until` is renewed every round by the leader; once it has passed, another collector
-- may take over even without the advisory lock (a stalled leader, or one whose host vanished
-- while PostgreSQL still holds its session). `holds_lock`: the leader holds the advisory lock,
-- so a collector that gets that lock knows the leader's session is gone and may take over
-- before the lease ends.
CREATE TABLE sw_alert_leader (
    id          integer     PRIMARY KEY CHECK (id = 1),
    epoch       bigint      NOT NULL,
    holder      text        NOT NULL,
    lease_until timestamptz NOT NULL,
    holds_lock  boolean     NOT NULL
);
INSERT INTO sw_alert_leader (id, epoch, holder, lease_until, holds_lock)
VALUES (1, 0, '', '-infinity', false);

-- A claim: taken in a short transaction (FOR UPDATE SKIP LOCKED, epoch-checked) just before a
-- notification is sent; the result is recorded only under the same claim. A claim whose
-- `claimed_until` has passed (its leader died mid-send) is taken again by the next leader.
CREATE SEQUENCE sw_notification_claims;
ALTER TABLE sw_notifications
    ADD COLUMN claim_id      bigint,
    ADD COLUMN claimed_by    text,
    ADD COLUMN claim_epoch   bigint,
    ADD COLUMN claimed_until timestamptz;
