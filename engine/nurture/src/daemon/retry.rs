//! The one retry curve of the daemon's background work, and its uses: the
//! storage retries of the processor, the mail sender and the webhook sender
//! ([`Retries`], [`STORAGE`]), and the delivery retries of outbox rows
//! ([`MAIL`], [`WEBHOOKS`]).
//!
//! The curve: the wait before retry `n` (1 after the first failure) is
//! `first · 2^(n-1)`, capped at `cap`. Its uses differ only in their numbers:
//! - storage: 1 s, 2 s, 4 s, 8 s, then every 10 s (docs/daemon.md, "Failures");
//! - emails: 1 s, 2 s, 4 s, ... up to 10 minutes, for 24 hours (docs/email.md);
//! - webhooks: 1 s, 2 s, 4 s, ... up to an hour, for 24 hours (docs/routing.md);
//! - recording send outcomes: 100 ms, 200 ms, ... up to 10 s;
//! - probing a mail server after a failed send: 1 s, 2 s, ... up to 10 s.

use crate::daemon::metrics::Metrics;
use crate::model::time::Timestamp;
use crate::store::StoreError;
use std::time::Duration;

/// Doubling waits from `first`, capped at `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Curve {
    pub first: Duration,
    pub cap: Duration,
}

impl Curve {
    /// The wait before retry `n` (1 after the first failure; 0 counts as 1).
    pub fn delay(&self, n: u32) -> Duration {
        // 2^31 of any `first` is past any cap worth having.
        let exp = n.clamp(1, 32) - 1;
        self.first
            .checked_mul(1u32 << exp.min(31))
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

/// A failed database operation of a background loop, retried until it works.
pub const STORAGE: Curve = Curve {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(10),
};

/// Probing a mail server that failed (connect and greet): soon and then
/// every 10 s, so that mail waiting on its backoff goes as soon as the
/// server is back.
pub const PROBE: Curve = Curve {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(10),
};

/// Recording a batch of send outcomes: soon, since the sends are done and
/// their rows stay leased until it works.
pub const RECORD: Curve = Curve {
    first: Duration::from_millis(100),
    cap: Duration::from_secs(10),
};

/// How an outbox row is retried after a transient failure: on `curve`, for
/// `give_up_after` from when the row was written, the last try at that mark.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub curve: Curve,
    pub give_up_after: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Emails and notifications.
pub const MAIL: Delivery = Delivery {
    curve: Curve {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(600),
    },
    give_up_after: DAY,
};

/// Webhooks.
pub const WEBHOOKS: Delivery = Delivery {
    curve: Curve {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(3600),
    },
    give_up_after: DAY,
};

impl Delivery {
    /// After try number `attempts` failed at `now`: when to try again, or
    /// `None` to give up (the row is `give_up_after` old).
    pub fn next_try(&self, attempts: i64, created: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let end = created + chrono::Duration::from_std(self.give_up_after).unwrap_or_default();
        if now >= end {
            return None;
        }
        let n = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
        let wait = chrono::Duration::from_std(self.curve.delay(n)).unwrap_or_default();
        Some((now + wait).min(end))
    }
}

/// The failures in a row of one background loop's database work (processing,
/// sending, webhooks), and what each failure does: log it with its cause,
/// count it in the metrics, and give the wait before the next try
/// ([`STORAGE`]).
#[derive(Default)]
pub(crate) struct Retries(u32);

impl Retries {
    pub(crate) fn succeeded(&mut self) {
        self.0 = 0;
    }

    /// `what` names the work in the log: "{what} failed; retrying: {cause}".
    pub(crate) fn failed(&mut self, what: &str, e: &StoreError, metrics: &Metrics) -> Duration {
        self.0 = self.0.saturating_add(1);
        let wait = STORAGE.delay(self.0);
        let cause = e.cause();
        // At debug: the outage is logged once, when it starts and ends
        // (daemon/health.rs), not at every retry.
        tracing::debug!(error = %e, retry_in = ?wait, "{what} failed; retrying: {cause}");
        metrics.storage_failed(cause);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(c: Curve, n: std::ops::RangeInclusive<u32>) -> Vec<u64> {
        n.map(|n| c.delay(n).as_secs()).collect()
    }

    #[test]
    fn storage_retries_back_off_to_ten_seconds() {
        assert_eq!(secs(STORAGE, 1..=7), [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn mail_retries_double_from_a_second_to_ten_minutes() {
        assert_eq!(
            secs(MAIL.curve, 1..=12),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
        );
    }

    #[test]
    fn webhook_retries_double_to_an_hour() {
        assert_eq!(
            secs(WEBHOOKS.curve, 1..=14),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
    }

    #[test]
    fn recording_retries_start_at_a_tenth_of_a_second() {
        let ms: Vec<u128> = (1..=9).map(|n| RECORD.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(RECORD.delay(u32::MAX), RECORD.cap);
    }

    #[test]
    fn retries_stop_after_a_day_with_a_last_try_at_the_mark() {
        let t0 = crate::model::time::parse("2026-01-01T00:00:00Z").unwrap();
        let day = chrono::Duration::hours(24);
        for d in [MAIL, WEBHOOKS] {
            assert_eq!(
                d.next_try(1, t0, t0),
                Some(t0 + chrono::Duration::seconds(1))
            );
            let late = t0 + chrono::Duration::hours(23) + chrono::Duration::minutes(55);
            assert_eq!(d.next_try(20, t0, late), Some(t0 + day));
            assert_eq!(d.next_try(21, t0, t0 + day), None);
        }
    }
}
