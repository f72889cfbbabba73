//! The backlog gauges (events pending, due work, leads in quarantine,
//! whether the outbox is held),
//! sampled from the store every two seconds.

use super::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(store: Store, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok((pending, due)) = store.queue_depth().await {
            metrics.events_pending.set(pending);
            metrics.due_work.set(due);
        }
        if let Ok(n) = store.quarantine_count().await {
            metrics.leads_quarantined.set(n);
        }
        if let Ok(held) = store.outbox_hold().await {
            metrics.outbox_held.set(i64::from(held.is_some()));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}
