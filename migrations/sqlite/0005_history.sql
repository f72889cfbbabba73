-- Version 2 keeps a lead's history out of its state: the state holds what
-- the evaluator needs to decide (bounded), and the history is appended here,
-- once, as it happens (n counts from 0 per lead, as in ledger and
-- transitions). States stored before are moved by `nurture migrate` (the
-- upgrade after these statements, store/upgrade.rs).

-- Marketing emails the engine decided to send (drip steps).
CREATE TABLE emails (
    lead      TEXT    NOT NULL,
    n         BIGINT  NOT NULL,
    campaign  TEXT    NOT NULL,
    step      BIGINT  NOT NULL,  -- 1-based, as marketers count
    template  TEXT    NOT NULL,
    at        BIGINT  NOT NULL,  -- epoch milliseconds
    PRIMARY KEY (lead, n)
);

-- Who a lead was assigned to, by which routing rule.
CREATE TABLE assignments (
    lead   TEXT    NOT NULL,
    n      BIGINT  NOT NULL,
    owner  TEXT    NOT NULL,
    rule   TEXT    NOT NULL,
    at     BIGINT  NOT NULL,
    PRIMARY KEY (lead, n)
);
CREATE INDEX assignments_owner ON assignments (owner, lead);

-- Sales' answers as applied, with the owner who held the lead then.
CREATE TABLE feedback (
    lead    TEXT    NOT NULL,
    n       BIGINT  NOT NULL,
    owner   TEXT,
    status  TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    PRIMARY KEY (lead, n)
);

-- The timeline is composed when read from the events applied, the ledger,
-- the stage changes and the assignments (store/timeline.rs): the copies
-- version 1 wrote of them go.
DELETE FROM timeline WHERE kind IN ('event', 'scored', 'stage_changed', 'assigned');
