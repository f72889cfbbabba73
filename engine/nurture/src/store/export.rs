//! The stored history read whole, for `nurture replay` and its `--export`:
//! every event in the order it was stored, page by page (each page a short
//! read of its own, so a running daemon is never held up), without the
//! leads erased (their payloads are scrubbed: they cannot be replayed, and
//! half of a lead's history would be worse than none).

use super::{Store, StoreError};
use sqlx::Row;
use std::collections::HashSet;

/// One stored event: its place in the log, its lead, its stored form.
pub struct StoredEvent {
    pub seq: i64,
    pub lead: String,
    pub payload: String,
}

impl Store {
    /// Up to `limit` stored events after `after` (a `seq`), in order.
    pub async fn stored_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql =
            self.sql("SELECT seq, lead, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    lead: r.try_get(1)?,
                    payload: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The leads whose personal data was erased.
    pub async fn erased_leads(&self) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM leads WHERE erased_at IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }
}
