//! Leads set aside by the processor (`quarantine`): listed with their cause
//! for `nurture doctor` and the admin API, counted for `/healthz` and the
//! metrics, and released one at a time. The processor itself writes them, in
//! the transaction of the step that found them (`step.rs`).

use super::{from_millis, Store, StoreError};
use crate::model::time::Timestamp;
use nurture_core::writes::{Entry, TimelineKind};
use serde::Serialize;
use sqlx::Row;

/// A lead in quarantine.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Quarantined {
    pub lead: String,
    /// Why its step could not be applied.
    pub cause: String,
    /// Since when it is set aside.
    #[serde(with = "crate::model::time::serde_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Its events waiting meanwhile.
    pub events_pending: i64,
}

impl Store {
    /// Every lead in quarantine, oldest first.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.lead, q.cause, q.at, \
             (SELECT COUNT(*) FROM events e WHERE e.lead = q.lead AND e.processed_at IS NULL) \
             FROM quarantine q ORDER BY q.at, q.lead",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    lead: r.try_get(0)?,
                    cause: r.try_get(1)?,
                    at: from_millis(r.try_get(2)?),
                    events_pending: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// How many leads are in quarantine.
    pub async fn quarantine_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM quarantine")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Takes a lead out of quarantine: its waiting events and due work are
    /// applied again by the next step (the cause had better be fixed, or it
    /// is set aside again). Returns false if it was not in quarantine.
    pub async fn release(&self, lead: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // A step that read before this release must not commit over it.
        // Every partition's: this may run where the number of partitions
        // is not known (`nurture doctor`), and it is rare.
        sqlx::query("UPDATE partitions SET version = version + 1")
            .execute(&mut *tx)
            .await?;
        let sql = self.sql("DELETE FROM quarantine WHERE lead = $1");
        let released = sqlx::query(&sql)
            .bind(lead.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !released {
            return Ok(false);
        }
        let entry = Entry::new(lead, now, TimelineKind::Released, serde_json::json!({}));
        self.insert_timeline(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(true)
    }
}
