//! What `/healthz` and `/readyz` report beyond the backlog: whether the
//! database takes writes (the last failure's cause, until a write succeeds),
//! whether the mail transport is up (the last send's outcome), whether the
//! last rules change was rejected, and whether the processor is advancing
//! (stall detection, `--stall-after`). An outage (database, mail server) is
//! logged when it starts, when it fails for a reason it has not had yet,
//! and when it ends, with the failures in between counted: not a line per
//! attempt.

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
    /// The database refusing writes, until a write succeeds again.
    storage: Outage,
    /// The mail transport failing (connection refused, timeouts, 4xx),
    /// until a send succeeds again.
    mail: Outage,
    /// `/readyz` says not ready when the oldest waiting event or overdue
    /// item is older than this (`--ready-max-lag`).
    ready_max_lag: Duration,
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
            storage: Outage::default(),
            mail: Outage::default(),
            ready_max_lag: READY_MAX_LAG,
            rules_error: Reason::default(),
        }
    }

    /// With `/readyz`'s bound on the backlog's age (`--ready-max-lag`).
    pub fn with_ready_max_lag(mut self, lag: Duration) -> Health {
        self.ready_max_lag = lag;
        self
    }

    /// How old the backlog may get before `/readyz` says not ready.
    pub fn ready_max_lag(&self) -> Duration {
        self.ready_max_lag
    }

    /// A write failed: `/healthz` reports the cause until a write succeeds.
    /// Logged when the database starts refusing, not at every failure.
    pub fn storage_failed(&self, cause: String) {
        let now = self.clock.now().timestamp_millis();
        match self.storage.failed(cause.clone(), now) {
            Failed::Started => tracing::error!(
                %cause,
                "database: refusing writes; retrying (logged again when writes succeed)"
            ),
            Failed::Changed(failures) => tracing::error!(
                %cause,
                failures,
                "database: still refusing writes, for another reason"
            ),
            Failed::Again => tracing::debug!(%cause, "database: a write failed again"),
        }
    }

    /// A write was committed: the database takes writes.
    pub fn storage_ok(&self) {
        if let Some(d) = self.storage.ok() {
            let down_s = self.secs_since(d.since);
            tracing::info!(
                failures = d.failures,
                down_s,
                "database: writes succeed again after {} failures",
                d.failures
            );
        }
    }

    /// Why the last write failed, if none succeeded since.
    pub fn storage_error(&self) -> Option<String> {
        self.storage.get().map(|d| d.cause)
    }

    /// A send failed for now (`transport`: `smtp`, `files`): the transport
    /// is down until a send succeeds. Logged when it goes down, not at
    /// every failed send.
    pub fn mail_failed(&self, transport: &str, cause: &str) {
        let now = self.clock.now().timestamp_millis();
        match self.mail.failed(cause.to_string(), now) {
            Failed::Started => tracing::warn!(
                %cause,
                "{transport}: down; sends wait and are retried (logged again when one succeeds)"
            ),
            Failed::Changed(failures) => {
                tracing::warn!(%cause, failures, "{transport}: still down, for another reason")
            }
            Failed::Again => tracing::debug!(%cause, "{transport}: a send failed again"),
        }
    }

    /// A send succeeded: the transport is up.
    pub fn mail_ok(&self, transport: &str) {
        if let Some(d) = self.mail.ok() {
            let down_s = self.secs_since(d.since);
            tracing::info!(
                failures = d.failures,
                down_s,
                "{transport}: back after {} failures",
                d.failures
            );
        }
    }

    /// The mail transport's outage, if the last send failed for now.
    pub fn mail_down(&self) -> Option<Down> {
        self.mail.get()
    }

    /// Whole seconds from `since` (epoch ms) to now.
    pub fn secs_since(&self, since: i64) -> i64 {
        (self.clock.now().timestamp_millis() - since).max(0) / 1000
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

/// The default of `--ready-max-lag`.
pub const READY_MAX_LAG: Duration = Duration::from_secs(300);

/// A dependency that is failing: since when, how often, and why last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// Epoch ms of the first failure.
    pub since: i64,
    pub failures: u64,
    pub cause: String,
}

/// What a failure did to an outage.
enum Failed {
    Started,
    /// A cause this outage has not had yet (the failures so far).
    Changed(u64),
    Again,
}

/// Whether a dependency is down, until it works again; and the causes this
/// outage has had (a few), so that causes taking turns are logged once each.
#[derive(Default)]
struct Outage(std::sync::Mutex<Option<(Down, Vec<String>)>>);

/// Causes remembered per outage: past this many, new ones are not logged.
const CAUSES: usize = 8;

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Down, Vec<String>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failure: whether it starts an outage, brings a cause this
    /// outage has not had (both logged), or is one more of those seen (not
    /// logged).
    fn failed(&self, cause: String, now: i64) -> Failed {
        let mut d = self.lock();
        match d.as_mut() {
            Some((d, seen)) => {
                d.failures += 1;
                d.cause = cause.clone();
                if seen.contains(&cause) || seen.len() >= CAUSES {
                    Failed::Again
                } else {
                    seen.push(cause);
                    Failed::Changed(d.failures)
                }
            }
            None => {
                *d = Some((
                    Down {
                        since: now,
                        failures: 1,
                        cause: cause.clone(),
                    },
                    vec![cause],
                ));
                Failed::Started
            }
        }
    }

    /// Ends the outage, if there was one: what it was.
    fn ok(&self) -> Option<Down> {
        self.lock().take().map(|(d, _)| d)
    }

    fn get(&self) -> Option<Down> {
        self.lock().as_ref().map(|(d, _)| d.clone())
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

    /// An outage is one state from its first failure to the next success,
    /// however many failures come between.
    #[test]
    fn an_outage_counts_its_failures_and_ends_at_a_success() {
        let t = TestClock::new(crate::model::time::parse("2026-01-01T00:00:00Z").unwrap());
        let h = Health::new(t.clock(), Duration::from_secs(30));
        assert_eq!(h.mail_down(), None);
        h.mail_failed("smtp", "connection refused");
        t.advance(chrono::Duration::seconds(5));
        h.mail_failed("smtp", "timed out");
        let d = h.mail_down().unwrap();
        assert_eq!((d.failures, d.cause.as_str()), (2, "timed out"));
        // Causes taking turns are each new once.
        assert!(matches!(
            h.mail.failed("timed out".into(), 0),
            Failed::Again
        ));
        assert!(matches!(
            h.mail.failed("connection refused".into(), 0),
            Failed::Again
        ));
        assert!(matches!(h.mail.failed("4xx".into(), 0), Failed::Changed(5)));
        assert_eq!(h.secs_since(d.since), 5);
        h.mail_ok("smtp");
        assert_eq!(h.mail_down(), None);
        h.storage_failed("disk full".into());
        assert_eq!(h.storage_error().as_deref(), Some("disk full"));
        h.storage_ok();
        assert_eq!(h.storage_error(), None);
    }
}
