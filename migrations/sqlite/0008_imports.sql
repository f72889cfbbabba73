-- Imports of history under way (`nurture import`, docs/daemon.md,
-- Importing history). While one is open, due work (drip steps, SLA clocks,
-- `schedule` ticks) waits at its `frontier`: the latest time among the
-- events it has stored (ms; the lowest value before its first), so that
-- history and the work it comes due for run in the order of time, as in
-- `simulate`. An import not heard from for two minutes (`heartbeat`, ms)
-- holds nothing back.
CREATE TABLE imports (
    id        TEXT   PRIMARY KEY,
    frontier  BIGINT NOT NULL,
    heartbeat BIGINT NOT NULL
);
