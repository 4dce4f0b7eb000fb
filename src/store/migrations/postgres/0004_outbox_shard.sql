-- As SQLite's migration 0005: the work shard of each outbox message (its
-- incident's), so that each instance delivers only the shards it owns.
ALTER TABLE outbox ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET shard = COALESCE((incident->>'shard')::int, 0) WHERE done_at IS NULL;
-- The pending index stays (destination, id): reading in id order needs it, and
-- an instance's shards are a filter over that scan (with N instances it reads
-- about N rows per row it keeps).
