-- Problem records (problem management) and change records (change management).
CREATE TABLE problems (
    id        TEXT    PRIMARY KEY,
    signature TEXT    NOT NULL,
    state     TEXT    NOT NULL,
    opened_at INTEGER NOT NULL,
    data      TEXT    NOT NULL
);
CREATE TABLE changes (
    id       TEXT    PRIMARY KEY,
    ci       TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    start_at INTEGER NOT NULL,
    end_at   INTEGER NOT NULL,
    summary  TEXT    NOT NULL
);
CREATE INDEX incidents_opened_at ON incidents(opened_at);
ALTER TABLE alerts ADD COLUMN change_id TEXT;
