-- Fewer index entries per new alert and incident, the bulk of an alert
-- storm's writes:
-- * `alerts_status_last_seen` served no query: state loads filter by shard
--   and by status OR last_seen OR incident together, which the planner
--   answers by scanning `alerts_shard_status` or the table.
-- * `incidents_opened_at` serves only the problem-signature load, which
--   reads resolved incidents: an open incident need not be in it.
DROP INDEX IF EXISTS alerts_status_last_seen;
DROP INDEX IF EXISTS incidents_opened_at;
CREATE INDEX incidents_resolved_opened_at ON incidents(opened_at) WHERE state = 'resolved';
