-- The worst value of a firing alert and its summary at that moment, so the resolve message
-- can say what the value is now and what it peaked at.
ALTER TABLE sw_alert_state
    ADD COLUMN peak         float8,
    ADD COLUMN peak_summary text NOT NULL DEFAULT '';
