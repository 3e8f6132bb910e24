-- Alerting: rule-instance state, the history of transitions, the notification outbox,
-- silences from the dashboard, and the per-minute signals rules read besides aggregates.

-- One row per alert instance (a rule and one combination of its group-by labels).
CREATE TABLE sw_alert_state (
    rule            text        NOT NULL,
    labels_key      text        NOT NULL,   -- canonical "k=v,k=v" of labels
    labels          jsonb       NOT NULL,
    state           text        NOT NULL,   -- pending | firing | resolving
    severity        text        NOT NULL,
    value           double precision,
    threshold       double precision,
    summary         text        NOT NULL,
    pending_since   timestamptz NOT NULL,
    firing_since    timestamptz,
    resolving_since timestamptz,
    last_notified   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, labels_key)
);

-- Every firing and resolve, for the dashboard's history.
CREATE TABLE sw_alert_events (
    id         bigserial   PRIMARY KEY,
    time       timestamptz NOT NULL DEFAULT now(),
    rule       text        NOT NULL,
    labels_key text        NOT NULL,
    labels     jsonb       NOT NULL,
    event      text        NOT NULL,   -- firing | resolved | renotify
    severity   text        NOT NULL,
    value      double precision,
    threshold  double precision,
    summary    text        NOT NULL,
    since      timestamptz NOT NULL,
    silenced   boolean     NOT NULL DEFAULT false
);
CREATE INDEX sw_alert_events_time ON sw_alert_events (time);

-- The outbox: written in the same transaction as the state change that causes it, delivered
-- by the leader, retried with backoff, never deleted silently.
CREATE TABLE sw_notifications (
    id              bigserial   PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    channel         text        NOT NULL,
    group_key       text        NOT NULL,   -- notifications of one evaluation tick share it
    event_id        bigint      NOT NULL REFERENCES sw_alert_events (id) ON DELETE CASCADE,
    status          text        NOT NULL,   -- pending | sent | failed | silenced
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz,
    thread_ts       text                    -- Slack chat.postMessage: the firing message's ts
);
CREATE INDEX sw_notifications_pending ON sw_notifications (next_attempt_at) WHERE status = 'pending';

-- Silences created from the dashboard (config silences live in the config file).
CREATE TABLE sw_silences (
    id         bigserial   PRIMARY KEY,
    rule       text,                      -- NULL: every rule
    labels     jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- every pair must match
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    comment    text        NOT NULL DEFAULT '',
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Per-minute counts of flagged spans (full-scan suspects, replica lag, connect failures), kept
-- at ingest so rules never scan raw spans. Flagged spans are always kept by the agent.
CREATE TABLE sw_flag_counts (
    minute    timestamptz NOT NULL,
    service   text        NOT NULL,
    operation text        NOT NULL,
    peer      text        NOT NULL,
    flag      text        NOT NULL,
    count     bigint      NOT NULL,
    PRIMARY KEY (minute, service, operation, peer, flag)
);

-- Each agent's cumulative counters per batch, so "an agent is dropping data" is a rate.
CREATE TABLE sw_agent_stats (
    time          timestamptz NOT NULL DEFAULT now(),
    agent_id      text        NOT NULL,
    instance      text        NOT NULL,
    spans_dropped bigint      NOT NULL
);
CREATE INDEX sw_agent_stats_agent_time ON sw_agent_stats (agent_id, time);
