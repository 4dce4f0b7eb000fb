-- The work shard of each outbox message (its incident's), so that with
-- Kafka each instance delivers only the messages of the shards it owns.
ALTER TABLE outbox ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET shard = COALESCE(json_extract(incident, '$.shard'), 0) WHERE done_at IS NULL;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox(destination, shard, id) WHERE done_at IS NULL;
