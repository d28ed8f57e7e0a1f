-- The replica whose sync call waits for a request: the replica that records the device's
-- response publishes it to that one (Redis `cmd:resp:{owner}`). Empty for queued kinds.
ALTER TABLE requests ADD COLUMN owner text NOT NULL DEFAULT '';
