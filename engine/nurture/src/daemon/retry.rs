//! Retrying database work in the background loops (processing, sending,
//! webhooks): the wait before each try, and what a failure does.

use super::metrics::Metrics;
use crate::store::StoreError;
use std::time::Duration;

/// The wait before retry `failures` of a database operation that failed:
/// 1 s, 2 s, 4 s, 8 s, then every 10 s, so a full disk or a read-only
/// database is neither hammered nor left unnoticed for long once it is back.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs((1u64 << (failures.clamp(1, 5) - 1)).min(10))
}

/// The failures in a row of one background loop's database work (processing,
/// sending, webhooks), and what each failure does: log it with its cause,
/// count it in the metrics, and give the wait before the next try.
#[derive(Default)]
pub(crate) struct Retries(u32);

impl Retries {
    pub(crate) fn succeeded(&mut self) {
        self.0 = 0;
    }

    /// `what` names the work in the log: "{what} failed; retrying: {cause}".
    pub(crate) fn failed(&mut self, what: &str, e: &StoreError, metrics: &Metrics) -> Duration {
        self.0 += 1;
        let wait = retry_delay(self.0);
        let cause = e.cause();
        tracing::error!(error = %e, retry_in = ?wait, "{what} failed; retrying: {cause}");
        metrics.storage_failed(cause);
        wait
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_retries_back_off_to_ten_seconds() {
        let secs: Vec<u64> = (1..=7).map(|n| super::retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10]);
    }
}
