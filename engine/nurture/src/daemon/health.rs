//! What `/healthz` reports beyond the backlog: whether the database takes
//! writes (the last failure's cause, until a write succeeds), whether the
//! last rules change was rejected, and whether the processor is advancing
//! (stall detection, `--stall-after`).

use crate::clock::Clock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The default of `--stall-after`.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

pub struct Health {
    clock: Clock,
    /// `/healthz` says `degraded` when the processor has neither committed
    /// a step nor found nothing to do for this long.
    stall_after: Duration,
    /// When each processing worker last committed a step or found nothing
    /// to do (epoch ms), by worker: `/healthz` says the processor is not
    /// advancing when the oldest gets old (one worker stuck in a plugin
    /// call holds its partition up, whatever the others do).
    last_progress: std::sync::Mutex<std::collections::BTreeMap<usize, i64>>,
    /// When the daemon started: the progress of a processor with no worker
    /// yet.
    started: AtomicI64,
    /// Why the last write failed, until a write succeeds again.
    storage_error: Reason,
    /// Why the last rules change was rejected, until one is taken.
    rules_error: Reason,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Clock::system(), STALL_AFTER)
    }
}

impl Health {
    pub fn new(clock: Clock, stall_after: Duration) -> Health {
        Health {
            last_progress: Default::default(),
            started: clock.now().timestamp_millis().into(),
            clock,
            stall_after,
            storage_error: Reason::default(),
            rules_error: Reason::default(),
        }
    }

    /// A write failed: `/healthz` reports the cause until a write succeeds.
    pub fn storage_failed(&self, cause: String) {
        self.storage_error.set(cause);
    }

    /// A write was committed: the database takes writes.
    pub fn storage_ok(&self) {
        if self.storage_error.clear() {
            tracing::info!("database writes succeed again");
        }
    }

    /// Why the last write failed, if none succeeded since.
    pub fn storage_error(&self) -> Option<String> {
        self.storage_error.get()
    }

    /// A rules change was rejected (the rules in force keep running).
    pub fn rules_rejected(&self, why: String) {
        self.rules_error.set(why);
    }

    /// New rules are in force.
    pub fn rules_reloaded(&self) {
        self.rules_error.clear();
    }

    /// Why the last rules change was rejected, if none was taken since.
    pub fn rules_error(&self) -> Option<String> {
        self.rules_error.get()
    }

    /// Processing worker `worker` committed a step, or found nothing to do
    /// (or started).
    pub fn processor_advanced(&self, worker: usize) {
        let now = self.clock.now().timestamp_millis();
        self.last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker, now);
    }

    /// How long since the processor last advanced: its least advanced
    /// worker.
    pub fn since_processor_advanced(&self) -> Duration {
        let last = self
            .last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .min()
            .unwrap_or_else(|| self.started.load(Ordering::Relaxed));
        let ms = self.clock.now().timestamp_millis().saturating_sub(last);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// How long the processor may go without advancing before `/healthz`
    /// says it is stalled (`--stall-after`).
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }
}

/// Why something last went wrong, until it goes right again (`/healthz`).
#[derive(Default)]
struct Reason(std::sync::Mutex<Option<String>>);

impl Reason {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, why: String) {
        *self.lock() = Some(why);
    }

    /// Whether there was a reason to clear.
    fn clear(&self) -> bool {
        self.lock().take().is_some()
    }

    fn get(&self) -> Option<String> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;

    /// The stall is measured on the clock: no real time needs to pass.
    #[test]
    fn the_processor_stalls_when_the_clock_moves_past_stall_after() {
        let t = TestClock::new(crate::model::time::parse("2026-01-01T00:00:00Z").unwrap());
        let h = Health::new(t.clock(), Duration::from_secs(30));
        assert_eq!(h.since_processor_advanced(), Duration::ZERO);
        t.advance(chrono::Duration::seconds(31));
        assert_eq!(h.since_processor_advanced(), Duration::from_secs(31));
        h.processor_advanced(0);
        h.processor_advanced(1);
        assert_eq!(h.since_processor_advanced(), Duration::ZERO);
        // One worker stuck (a plugin call) while another goes on: stalled.
        t.advance(chrono::Duration::seconds(31));
        h.processor_advanced(1);
        assert_eq!(h.since_processor_advanced(), Duration::from_secs(31));
    }
}
