//! The processor's workers: each takes a partition (daemon/partitions.rs),
//! steps it, and takes the next; they rest when every partition came up
//! empty, until new events or a quarter second, and back off while the
//! database fails. Several workers apply different partitions side by side:
//! one evaluates while another's step commits.

use super::metrics::Metrics;
use super::partitions::Partitions;
use super::processor::{Processor, BATCH};
use super::retry::Retries;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long idle workers rest before going round the partitions again (due
/// work and `schedule` ticks are found this way).
const REST: Duration = Duration::from_millis(250);

/// How long a worker waits before stepping again a partition whose next
/// item waits for other partitions' earlier work.
const WAIT: Duration = Duration::from_millis(2);

/// Runs worker number `worker` until `stop` turns true, each step at `p`'s clock's time.
pub async fn run(
    worker: usize,
    p: Arc<Processor>,
    parts: Arc<Partitions>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retries = Retries::default();
    let max = p.max_batch.max(1);
    let start = BATCH.min(max);
    metrics.health().processor_advanced(worker);
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(claim) = parts.claim() else {
            // Every held partition is busy, or none is held: nothing for
            // this worker to do.
            metrics.health().processor_advanced(worker);
            tokio::select! {
                _ = parts.rest(REST) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let part = claim.part;
        // The step's size: doubled while the partition's steps come back
        // full (a backlog), reset once one does not.
        let batch = parts.batch(part, start);
        let (found, waited) = match p.step_up_to(part, p.clock.now(), batch).await {
            Ok(stepped) => {
                let n = stepped.applied;
                let next = if n > 0 && n as i64 >= batch {
                    (batch * 2).min(max)
                } else {
                    start
                };
                parts.set_batch(part, next);
                if n > 0 && n as i64 >= batch {
                    // More waits: in the queue again, behind the others.
                    parts.touch([part]);
                }
                retries.succeeded();
                // Only a step that wrote says the database takes writes: an
                // idle one wrote nothing (it would end an outage that goes on).
                if n > 0 {
                    metrics.storage_ok();
                }
                metrics.health().processor_advanced(worker);
                (n > 0, stepped.waited)
            }
            Err(e) => {
                drop(claim);
                // Nothing of the step was written; it is done again, whole.
                let wait = retries.failed("processing step", &e, &metrics);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        drop(claim);
        if waited {
            // Other partitions (maybe another daemon's) have earlier work
            // to apply first: the round goes on to them, and comes back to
            // this one soon rather than after a rest.
            if !found {
                tokio::time::sleep(WAIT).await;
            }
            continue;
        }
        if parts.stepped(found) {
            tokio::select! {
                _ = parts.rest(REST) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
