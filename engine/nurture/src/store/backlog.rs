//! What waits, and since when: the figures behind the backlog gauges of
//! `/metrics` and the checks of `/readyz` (events not yet applied, due work
//! whose time has come, outbox rows not yet delivered, per kind). Each
//! query walks an index from its low end, so a scrape costs little however
//! large the tables.

use super::{from_millis, millis, OutboxKind, Store, StoreError};
use crate::model::time::Timestamp;
use sqlx::Row as _;

/// Overdue due work is counted exactly up to this many rows (an upper
/// bound of what a scrape may walk); above, the gauge says this many.
pub const OVERDUE_COUNTED: i64 = 100_000;

/// The backlog at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    /// Events accepted and not yet applied (as `/healthz` counts them).
    pub events_pending: i64,
    /// When the oldest of them was received, leaving out the events of
    /// leads in quarantine (they wait for an operator, not for the
    /// processor: `nurture_leads_quarantined` says so).
    pub oldest_pending_event: Option<Timestamp>,
    /// Due work stored, future timers included.
    pub due_work: i64,
    /// Due work whose time has come (`at` ≤ now) and is not yet done.
    pub due_overdue: i64,
    /// When the oldest overdue item was due.
    pub oldest_overdue: Option<Timestamp>,
    /// Outbox rows not yet delivered or given up, by kind.
    pub outbox: Vec<OutboxBacklog>,
    pub quarantined: i64,
}

/// One outbox kind's undelivered rows.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxBacklog {
    pub kind: OutboxKind,
    /// Pending, being sent, or of unknown outcome after a crash.
    pub pending: i64,
    /// When the oldest of them was decided.
    pub oldest: Option<Timestamp>,
}

impl Store {
    /// The backlog at `now`.
    pub async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let (events_pending, due_work) = self.queue_depth().await?;
        let sql = self
            .sql(&format!(
                "SELECT (SELECT received_at FROM events WHERE processed_at IS NULL \
                           AND lead NOT IN (SELECT lead FROM quarantine) ORDER BY seq LIMIT 1), \
                        (SELECT COUNT(*) FROM (SELECT 1 FROM due_work WHERE at <= $1 LIMIT {OVERDUE_COUNTED}) d), \
                        (SELECT MIN(at) FROM due_work), \
                        (SELECT COUNT(*) FROM quarantine)"
            ))
            .into_owned();
        let row = sqlx::query(&sql)
            .bind(millis(&now))
            .fetch_one(&self.pool)
            .await?;
        let oldest_pending_event: Option<i64> = row.try_get(0)?;
        let due_overdue: i64 = row.try_get(1)?;
        let oldest_due: Option<i64> = row.try_get(2)?;
        let quarantined: i64 = row.try_get(3)?;
        // Open rows only: the (state, seq) index gives them without
        // touching the sent ones.
        let rows = sqlx::query(&format!(
            "SELECT kind, COUNT(*), MIN(created_at) FROM outbox WHERE state IN {} GROUP BY kind",
            super::outbox::OPEN
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut outbox: Vec<OutboxBacklog> = OutboxKind::ALL
            .into_iter()
            .map(|kind| OutboxBacklog {
                kind,
                pending: 0,
                oldest: None,
            })
            .collect();
        for r in rows {
            let kind: String = r.try_get(0)?;
            let Some(slot) = outbox.iter_mut().find(|o| o.kind.as_str() == kind) else {
                continue;
            };
            slot.pending = r.try_get(1)?;
            slot.oldest = r.try_get::<Option<i64>, _>(2)?.map(from_millis);
        }
        Ok(Backlog {
            events_pending,
            oldest_pending_event: oldest_pending_event.map(from_millis),
            due_work,
            due_overdue,
            oldest_overdue: oldest_due.filter(|&at| at <= millis(&now)).map(from_millis),
            outbox,
            quarantined,
        })
    }
}
