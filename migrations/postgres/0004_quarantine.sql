-- Leads set aside by the processor: a step for them could not be applied
-- (stored state unreadable, a write the database refused for their data, an
-- evaluator panic). Their events and due work wait, untouched, until the lead
-- is released (`nurture doctor --retry LEAD`); every other lead goes on.
CREATE TABLE quarantine (
    lead   TEXT    PRIMARY KEY,
    cause  TEXT    NOT NULL,
    at     BIGINT  NOT NULL   -- epoch milliseconds
);

-- Bumped by every write of what a processing step reads (leads, events
-- applied, due work, the routing book): a step reads and evaluates without
-- the write lock, and commits only if the version it read is still current.
ALTER TABLE engine_state ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
