-- How far the batch journal (data_dir/journal/) has been projected into the
-- tables: written in the same transaction as the rows it projects, so that
-- recovery after a crash applies exactly the records after it.
CREATE TABLE journal_state (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT INTO journal_state (id, seq) VALUES (1, 0);
