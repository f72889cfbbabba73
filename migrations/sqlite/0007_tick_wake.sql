-- A `schedule` tick visits only the leads it can change (docs/daemon.md,
-- Scheduled work): `tick_at` is when a tick may next change the lead (ms;
-- NULL: none can until it changes; the lowest value: any may), computed by
-- the evaluator (eval::Wake) under the rules `tick_rules` identifies
-- (Ruleset::wake_key). A row whose `tick_rules` is not the running rules'
-- (NULL for every row stored before) is visited, and its wake computed again.
ALTER TABLE leads ADD COLUMN tick_at BIGINT;
ALTER TABLE leads ADD COLUMN tick_rules BIGINT;
