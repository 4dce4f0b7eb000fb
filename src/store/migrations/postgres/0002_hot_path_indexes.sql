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
-- * `timeline_pkey`: entries are only ever read by incident, in id order,
--   which `timeline_incident (incident_id, id)` serves; the id stays unique
--   (its sequence), one index less per entry.
ALTER TABLE timeline DROP CONSTRAINT IF EXISTS timeline_pkey;
