-- The PostgreSQL schema: the same tables and columns as SQLite after its
-- migrations 0001..0003. Integers are BIGINT throughout (ids, millisecond
-- times, counters, shards; a u64 fingerprint is stored as its i64 bit
-- pattern), so both backends read rows with one decoder.

-- Incidents: one row each; lists and links live in `extra` (JSON).
CREATE TABLE incidents (
    id               BIGINT  PRIMARY KEY,
    key              TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         BIGINT  NOT NULL,
    impact           BIGINT  NOT NULL,
    urgency          BIGINT  NOT NULL,
    title            TEXT    NOT NULL,
    root_ci          TEXT,
    assignment_group TEXT,
    alert_count      BIGINT  NOT NULL,
    opened_at        BIGINT  NOT NULL,
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT,
    resolved_at      BIGINT,
    updated_at       BIGINT  NOT NULL,
    reopen_count     BIGINT  NOT NULL,
    flapping         BOOLEAN NOT NULL,
    extra            JSONB   NOT NULL,
    -- Work shard (Kafka partition) whose engine owns the incident.
    shard            BIGINT  NOT NULL DEFAULT 0
);
-- At most one active incident per correlation key, whatever the code does
-- and however many instances write.
CREATE UNIQUE INDEX incidents_one_active_per_key ON incidents(key) WHERE state <> 'resolved';
CREATE INDEX incidents_state_id ON incidents(state, id);
CREATE INDEX incidents_resolved_at ON incidents(resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX incidents_opened_at ON incidents(opened_at);
CREATE INDEX incidents_shard_state ON incidents(shard, state);

CREATE TABLE alerts (
    fingerprint       BIGINT  PRIMARY KEY,
    status            TEXT    NOT NULL,
    labels            JSONB   NOT NULL,
    annotations       JSONB   NOT NULL,
    starts_at         BIGINT  NOT NULL,
    ends_at           BIGINT,
    source            TEXT    NOT NULL,
    generator_url     TEXT    NOT NULL,
    incident_id       BIGINT,
    corr_key          TEXT    NOT NULL,
    suppressed_rule   TEXT,
    suppressed_reason TEXT,
    flapping          BOOLEAN NOT NULL,
    first_seen        BIGINT  NOT NULL,
    last_seen         BIGINT  NOT NULL,
    deliveries        BIGINT  NOT NULL,
    change_id         TEXT,
    shard             BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX alerts_status_last_seen ON alerts(status, last_seen);
CREATE INDEX alerts_shard_status ON alerts(shard, status);
-- A merge moves an incident's alerts: find them without scanning the table.
CREATE INDEX alerts_incident ON alerts(incident_id) WHERE incident_id IS NOT NULL;

CREATE TABLE incident_alerts (
    incident_id BIGINT NOT NULL,
    fingerprint BIGINT NOT NULL,
    joined_at   BIGINT NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
);

-- `id` orders an incident's entries as they were written.
CREATE TABLE timeline (
    id          BIGSERIAL PRIMARY KEY,
    incident_id BIGINT    NOT NULL,
    at          BIGINT    NOT NULL,
    kind        TEXT      NOT NULL,
    message     TEXT      NOT NULL,
    actor       TEXT
);
CREATE INDEX timeline_incident ON timeline(incident_id, id);

-- Problem records (problem management) and change records (change management).
CREATE TABLE problems (
    id        TEXT   PRIMARY KEY,
    signature TEXT   NOT NULL,
    state     TEXT   NOT NULL,
    opened_at BIGINT NOT NULL,
    data      JSONB  NOT NULL
);
CREATE TABLE changes (
    id       TEXT   PRIMARY KEY,
    ci       TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    start_at BIGINT NOT NULL,
    end_at   BIGINT NOT NULL,
    summary  TEXT   NOT NULL
);
