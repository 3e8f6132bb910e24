-- Slack (bot mode): one message per incident and channel, headed by its probable cause; the
-- incident's alert messages go into its thread and the head is updated as it changes
-- (collector/src/alerts/threads.rs).
CREATE TABLE sw_incident_threads (
    incident_id   bigint NOT NULL REFERENCES sw_incidents (id) ON DELETE CASCADE,
    -- The channel's name in collector.toml.
    channel       text   NOT NULL,
    -- The conversation id Slack answered with (chat.update needs it) and the head's ts.
    slack_channel text   NOT NULL,
    ts            text   NOT NULL,
    PRIMARY KEY (incident_id, channel)
);
