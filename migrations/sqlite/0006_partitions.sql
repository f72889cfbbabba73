-- Version 2 applies leads in partitions (docs/daemon.md, Partitions): a lead
-- hashes into one of a fixed number of them (model::partition), each is
-- applied in order by one worker at a time, and partitions go in parallel,
-- across daemons too. Each partition has its own progress: the version a
-- step checks before it commits, and where `schedule` ticks stand. The
-- rows are made by `nurture migrate` after these statements (as many as
-- the database is created with, `--partitions`; each starts where the one
-- engine_state row stood), and rows stored before get their partition then
-- (store/upgrade.rs).
CREATE TABLE partitions (
    id          INTEGER PRIMARY KEY,
    version     BIGINT  NOT NULL DEFAULT 0,
    ticked_to   BIGINT,
    tick_after  TEXT
);

-- The routing book stays one row, shared by all partitions: a step that
-- changed it commits only if nobody else did meanwhile.
ALTER TABLE engine_state ADD COLUMN book_version BIGINT NOT NULL DEFAULT 0;

ALTER TABLE events ADD COLUMN part INTEGER;
ALTER TABLE leads ADD COLUMN part INTEGER;
ALTER TABLE due_work ADD COLUMN part INTEGER;
CREATE INDEX events_part_pending ON events (part, seq) WHERE processed_at IS NULL;
CREATE INDEX leads_part ON leads (part, id);
CREATE INDEX due_work_part ON due_work (part, at, seq);

-- Daemons sharing a PostgreSQL database, each seen within the last seconds:
-- how many share the partitions out (daemon/leases.rs).
CREATE TABLE daemons (
    id       TEXT    PRIMARY KEY,
    seen_at  BIGINT  NOT NULL
);
