-- Incidents: firing alerts that began close together and are related, grouped by the alert
-- leader each evaluation round (collector/src/incidents/). Written only under the leader's
-- epoch (the same fence as sw_alert_state), read by the dashboard and the API.

CREATE TABLE sw_incidents (
    id            bigserial   PRIMARY KEY,
    opened        timestamptz NOT NULL,
    -- Set when every alert of the incident has resolved.
    resolved      timestamptz,
    title         text        NOT NULL,
    -- The first-ranked probable cause, as one line.
    cause_text    text        NOT NULL DEFAULT '',
    -- Every probable cause, ranked, with its evidence.
    cause         jsonb       NOT NULL DEFAULT '[]',
    -- When the causes were last worked out (they are refreshed while the incident is open).
    cause_updated timestamptz,
    -- The leader epoch that opened it.
    epoch         bigint      NOT NULL
);

CREATE INDEX sw_incidents_opened ON sw_incidents (opened DESC);
CREATE INDEX sw_incidents_open ON sw_incidents (id) WHERE resolved IS NULL;

CREATE TABLE sw_incident_alerts (
    incident_id bigint      NOT NULL REFERENCES sw_incidents (id) ON DELETE CASCADE,
    rule        text        NOT NULL,
    labels_key  text        NOT NULL,
    labels      jsonb       NOT NULL,
    severity    text        NOT NULL,
    summary     text        NOT NULL,
    -- When the alert began firing.
    started     timestamptz NOT NULL,
    -- When it joined the incident.
    joined      timestamptz NOT NULL,
    -- When it resolved (NULL while it fires or resolves).
    resolved    timestamptz,
    PRIMARY KEY (incident_id, rule, labels_key)
);

-- An alert belongs to at most one incident while it is active: a second writer cannot put it
-- in a second one.
CREATE UNIQUE INDEX sw_incident_alerts_active ON sw_incident_alerts (rule, labels_key)
    WHERE resolved IS NULL;
CREATE INDEX sw_incident_alerts_alert ON sw_incident_alerts (rule, labels_key, joined DESC);
