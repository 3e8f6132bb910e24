-- What an agent lost, as it reports it with every batch (model AgentStats fields 5 and 6):
-- spans missing from its shipped aggregates, and batches it moved to its dead-letter folder.
ALTER TABLE sw_agents
    ADD COLUMN spans_lost          bigint NOT NULL DEFAULT 0,
    ADD COLUMN dead_letter_batches bigint NOT NULL DEFAULT 0;
