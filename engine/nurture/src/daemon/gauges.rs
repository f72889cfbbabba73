//! The backlog gauges (events pending and the oldest one's age, due work
//! and what of it is overdue, undelivered outbox rows by kind, leads in
//! quarantine, whether the outbox is held), read from the store when
//! `/metrics` is scraped or `/readyz` asked: they say what `/healthz` says
//! at that moment, not what a sampler saw seconds before.

use super::metrics::Metrics;
use crate::model::time::Timestamp;
use crate::store::{Backlog, Store, StoreError};

/// Reads the backlog at `now` and sets the gauges from it.
pub async fn refresh(
    store: &Store,
    metrics: &Metrics,
    now: Timestamp,
) -> Result<Backlog, StoreError> {
    let b = store.backlog(now).await?;
    metrics.set_backlog(&b, now);
    metrics
        .outbox_held
        .set(i64::from(store.outbox_hold().await?.is_some()));
    Ok(b)
}
