-- A `schedule` tick over many leads runs in chunks, one step each; the last
-- lead id done is kept here until the tick is finished.
ALTER TABLE engine_state ADD COLUMN tick_after TEXT;
-- Ticks page through leads by id in byte order, the order `simulate` uses;
-- the database's own collation may sort differently (en_US and friends).
ALTER TABLE leads ALTER COLUMN id TYPE TEXT COLLATE "C";
