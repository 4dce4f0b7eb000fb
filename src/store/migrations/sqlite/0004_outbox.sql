-- Transactional outbox (DESIGN §6): every message a destination must hear
-- of, written in the transaction of the incident change it reports, and
-- delivered by the destination's sender in id order.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT    NOT NULL,
    incident_id INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    -- The incident as it was at this change (JSON).
    incident    TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    done_at     INTEGER,
    outcome     TEXT
);
CREATE INDEX outbox_pending ON outbox(destination, id) WHERE done_at IS NULL;
-- The id a destination gave an incident (ServiceNow sys_id, Jira key).
CREATE TABLE outbound_refs (
    destination TEXT    NOT NULL,
    incident_id INTEGER NOT NULL,
    external_id TEXT    NOT NULL,
    PRIMARY KEY (destination, incident_id)
) WITHOUT ROWID;
