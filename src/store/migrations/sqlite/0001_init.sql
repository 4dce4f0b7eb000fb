-- Incidents: one row each; lists and links live in `extra` (JSON).
CREATE TABLE incidents (
    id               INTEGER PRIMARY KEY,
    key              TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    impact           INTEGER NOT NULL,
    urgency          INTEGER NOT NULL,
    title            TEXT    NOT NULL,
    root_ci          TEXT,
    assignment_group TEXT,
    alert_count      INTEGER NOT NULL,
    opened_at        INTEGER NOT NULL,
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    resolved_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    reopen_count     INTEGER NOT NULL,
    flapping         INTEGER NOT NULL,
    extra            TEXT    NOT NULL
);
-- At most one active incident per correlation key, whatever the code does.
CREATE UNIQUE INDEX incidents_one_active_per_key ON incidents(key) WHERE state <> 'resolved';
CREATE INDEX incidents_state_id ON incidents(state, id);
CREATE INDEX incidents_resolved_at ON incidents(resolved_at) WHERE resolved_at IS NOT NULL;

-- Alerts by fingerprint (u64 stored bit-for-bit as a signed 64-bit integer).
CREATE TABLE alerts (
    fingerprint       INTEGER PRIMARY KEY,
    status            TEXT    NOT NULL,
    labels            TEXT    NOT NULL,
    annotations       TEXT    NOT NULL,
    starts_at         INTEGER NOT NULL,
    ends_at           INTEGER,
    source            TEXT    NOT NULL,
    generator_url     TEXT    NOT NULL,
    incident_id       INTEGER,
    corr_key          TEXT    NOT NULL,
    suppressed_rule   TEXT,
    suppressed_reason TEXT,
    flapping          INTEGER NOT NULL,
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    deliveries        INTEGER NOT NULL
);
CREATE INDEX alerts_status_last_seen ON alerts(status, last_seen);

CREATE TABLE incident_alerts (
    incident_id INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    joined_at   INTEGER NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
) WITHOUT ROWID;

CREATE TABLE timeline (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    actor       TEXT
);
CREATE INDEX timeline_incident ON timeline(incident_id, id);
