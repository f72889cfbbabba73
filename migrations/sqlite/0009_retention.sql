-- Retention (docs/operations.md, Retention): what is older than its setting
-- is pruned in small batches, by the daemon and by `nurture prune`.
-- An event applied keeps its row (its id still de-duplicates, its type and
-- times still show on the timeline); its payload is replaced and
-- `pruned_at` set (ms). A lead with a pruned event is no longer re-folded
-- for a late event: that needs its whole history.
ALTER TABLE events ADD COLUMN pruned_at BIGINT;
CREATE INDEX events_prunable ON events (received_at)
    WHERE processed_at IS NOT NULL AND pruned_at IS NULL;
-- A message delivered, failed, cancelled or withheld keeps its row (state,
-- times, Message-ID); its body is replaced and `pruned_at` set.
ALTER TABLE outbox ADD COLUMN pruned_at BIGINT;
CREATE INDEX outbox_prunable ON outbox (created_at)
    WHERE pruned_at IS NULL AND state IN ('sent', 'failed', 'cancelled', 'withheld');
-- Timeline entries and ledger rows go by their own time.
CREATE INDEX timeline_at ON timeline (at);
CREATE INDEX ledger_at ON ledger (at);
