-- A `schedule` tick over many leads runs in chunks, one step each; the last
-- lead id done is kept here until the tick is finished.
ALTER TABLE engine_state ADD COLUMN tick_after TEXT;
