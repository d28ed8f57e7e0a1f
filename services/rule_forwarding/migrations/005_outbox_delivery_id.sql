-- Outbox rows are keyed by their delivery id (`<message_id>:<rule_id>:<action index>`): a retried
-- or concurrent Ingest of the same record stores each delivery once and takes the row over
-- instead of adding a second one. Rows written before this migration have none.
ALTER TABLE rule_forwarding.outbox ADD COLUMN delivery_id text;
CREATE UNIQUE INDEX outbox_delivery_id ON rule_forwarding.outbox (delivery_id);
