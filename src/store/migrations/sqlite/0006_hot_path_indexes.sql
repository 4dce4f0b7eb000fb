-- Fewer index pages per alert state change, and none per repeat: the single
-- writer's page writes bound durable ingest (BENCHMARKS.md entry 17).
-- * `alerts_status_last_seen` moved an entry at every flush of repeat
--   counters (`last_seen`) and served only the list of firing alerts, which
--   `alerts_firing_started` serves in its order without the resolved ones.
-- * `alerts_shard_status` served no query: the state load filters by status
--   OR last_seen OR incident, which SQLite answers with a scan of the table.
DROP INDEX IF EXISTS alerts_status_last_seen;
DROP INDEX IF EXISTS alerts_shard_status;
CREATE INDEX alerts_firing_started ON alerts(starts_at) WHERE status = 'firing';
