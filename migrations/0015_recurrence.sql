-- Recurrence ("shop-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days",
-- store/src/recurrence.rs): failed probes over a week are read through an index holding only
-- them (failures are rare, so it stays small), an alert's history through its own key; the
-- leader writes what it found on the incident.
CREATE INDEX sw_probe_samples_failed ON sw_probe_samples (time, database) WHERE failure <> 'none';
CREATE INDEX sw_alert_events_alert ON sw_alert_events (rule, labels_key, time);
ALTER TABLE sw_incidents ADD COLUMN recurrence jsonb NOT NULL DEFAULT '[]';
