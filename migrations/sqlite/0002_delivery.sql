-- Delivery state of outbox rows (emails, notifications, webhooks):
-- pending → sending → sent | failed. A row is tried when `next_at` has come;
-- transient failures push it back with a growing delay.
ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_at BIGINT NOT NULL DEFAULT 0;      -- epoch ms
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN sent_at BIGINT;
-- What the receiver can de-duplicate on: an email's Message-ID, a webhook's webhook-id.
ALTER TABLE outbox ADD COLUMN msg_key TEXT;
CREATE INDEX outbox_due ON outbox (kind, state, next_at, seq);
CREATE INDEX outbox_lead ON outbox (lead, seq);

-- Values the daemon generates once and must keep across restarts (the secret
-- that signs unsubscribe links when none is configured).
CREATE TABLE daemon_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
