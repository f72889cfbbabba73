//! The processor's loop: steps while there is work, waits for new events
//! or due work when idle, and backs off while the database fails.

use super::metrics::Metrics;
use super::processor::{Processor, BATCH};
use super::retry::Retries;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Runs `p` until `stop` turns true, each step at `p`'s clock's time.
pub async fn run(
    p: Processor,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retries = Retries::default();
    // The step's size: doubled while steps come back full (a backlog), reset
    // once one does not.
    let mut batch = BATCH.min(p.max_batch.max(1));
    loop {
        if *stop.borrow() {
            return;
        }
        match p.step_up_to(p.clock.now(), batch).await {
            Ok(n) if n > 0 => {
                batch = if n as i64 >= batch {
                    (batch * 2).min(p.max_batch.max(1))
                } else {
                    BATCH.min(p.max_batch.max(1))
                };
                retries.succeeded();
                metrics.storage_ok();
                metrics.health().processor_advanced();
                continue;
            }
            Ok(_) => {
                batch = BATCH.min(p.max_batch.max(1));
                retries.succeeded();
                metrics.health().processor_advanced();
            }
            Err(e) => {
                // Nothing of the step was written; it is done again, whole.
                let wait = retries.failed("processing step", &e, &metrics);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        // Idle: wait for new events, due work (checked every quarter second), or stop.
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}
