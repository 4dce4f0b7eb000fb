-- Transactional outbox (DESIGN §6), as SQLite's migration 0004: every
-- message a destination must hear of, written in the transaction of the
-- incident change it reports, delivered in id order.
CREATE TABLE outbox (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT    NOT NULL,
    incident_id BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    incident    JSONB   NOT NULL,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    next_at     BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT,
    done_at     BIGINT,
    outcome     TEXT
);
CREATE INDEX outbox_pending ON outbox(destination, id) WHERE done_at IS NULL;
CREATE TABLE outbound_refs (
    destination TEXT    NOT NULL,
    incident_id BIGINT  NOT NULL,
    external_id TEXT    NOT NULL,
    PRIMARY KEY (destination, incident_id)
);
