-- Work shards: with Kafka each topic partition's engine owns its incidents
-- and alerts, and loads only those rows when the partition is assigned.
ALTER TABLE incidents ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
CREATE INDEX incidents_shard_state ON incidents(shard, state);
CREATE INDEX alerts_shard_status ON alerts(shard, status);
