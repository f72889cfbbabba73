-- The durable event log: an accepted event is here before the client hears 202.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    lead         TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    at           BIGINT  NOT NULL,  -- epoch milliseconds
    payload      TEXT    NOT NULL,  -- the event as JSON; erased with the lead
    received_at  BIGINT  NOT NULL,
    processed_at BIGINT             -- NULL until the evaluator applied it
);
CREATE INDEX events_pending ON events (seq) WHERE processed_at IS NULL;
CREATE INDEX events_lead ON events (lead, seq);

-- Lead state: the evaluator's LeadState as JSON, with the fields queries need.
CREATE TABLE leads (
    id           TEXT    PRIMARY KEY,
    email        TEXT    NOT NULL,
    stage        TEXT    NOT NULL,
    owner        TEXT,
    score        BIGINT  NOT NULL,
    fit          BIGINT  NOT NULL,
    consent      TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    erased_at    BIGINT,
    state        TEXT    NOT NULL
);
CREATE INDEX leads_stage ON leads (stage, id);
CREATE INDEX leads_owner ON leads (owner, id);

-- The score ledger, one row per entry (n counts from 0 per lead).
CREATE TABLE ledger (
    lead    TEXT    NOT NULL,
    n       BIGINT  NOT NULL,
    rule    TEXT    NOT NULL,
    points  BIGINT  NOT NULL,
    event   TEXT,
    at      BIGINT  NOT NULL,
    reason  TEXT,
    PRIMARY KEY (lead, n)
);

-- Stage transitions (n counts from 0 per lead).
CREATE TABLE transitions (
    lead        TEXT    NOT NULL,
    n           BIGINT  NOT NULL,
    from_stage  TEXT    NOT NULL,
    to_stage    TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    PRIMARY KEY (lead, n)
);

CREATE TABLE enrollments (
    lead       TEXT    NOT NULL,
    campaign   TEXT    NOT NULL,
    cycle      BIGINT  NOT NULL,
    status     TEXT    NOT NULL,
    next_step  BIGINT  NOT NULL,
    due_at     BIGINT,
    PRIMARY KEY (lead, campaign, cycle)
);

-- What happened to a lead, in order: events applied and the evaluator's effects.
CREATE TABLE timeline (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    lead    TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    kind    TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);
CREATE INDEX timeline_lead ON timeline (lead, seq);

-- Scheduled work (drip steps, SLA timers), run when due.
CREATE TABLE due_work (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    lead  TEXT    NOT NULL,
    at    BIGINT  NOT NULL,
    kind  TEXT    NOT NULL
);
CREATE INDEX due_work_at ON due_work (at, seq);

-- Messages to send (emails, notifications, webhooks), written with the decision.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    lead        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
);
CREATE INDEX outbox_state ON outbox (state, seq);

-- One-row tables: the routing book and where `schedule` rules have run to.
CREATE TABLE engine_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    book       TEXT    NOT NULL,
    ticked_to  BIGINT
);
INSERT INTO engine_state (id, book, ticked_to) VALUES (1, '{}', NULL);
