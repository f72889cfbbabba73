//! Retention: what is older than its setting goes, a small batch per
//! transaction (docs/operations.md, Retention). Four kinds:
//! - the payloads of events applied (the row stays: its id de-duplicates,
//!   its type and times show on the timeline), by when they were received;
//! - timeline entries (the table's own: notes, messages, webhooks), by
//!   their time;
//! - the bodies of messages no longer pending (sent, failed, cancelled,
//!   withheld; the row and its Message-ID stay), by when they were decided;
//! - ledger rows, by their time.
//!
//! Nothing the processor or a sender still needs is touched: events not yet
//! applied, messages still to go, due work, leases. A lead with a pruned
//! event is not re-folded any more (the processor checks `pruned_at`).

use super::{Backend, Store, StoreError};
use sqlx::Row;

/// The payload a pruned event keeps. It no longer reads as an event, so
/// `replay` leaves its lead out, as it does an erased one.
pub const PRUNED: &str = r#"{"pruned":true}"#;

/// What retention prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneKind {
    EventPayloads,
    Timeline,
    OutboxBodies,
    Ledger,
}

impl PruneKind {
    pub const ALL: [PruneKind; 4] = [
        PruneKind::EventPayloads,
        PruneKind::Timeline,
        PruneKind::OutboxBodies,
        PruneKind::Ledger,
    ];

    /// As settings, metrics and `nurture prune` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneKind::EventPayloads => "event_payloads",
            PruneKind::Timeline => "timeline",
            PruneKind::OutboxBodies => "outbox_bodies",
            PruneKind::Ledger => "ledger",
        }
    }

    /// Whether a pruned row is deleted (else its payload is replaced).
    pub fn deletes(self) -> bool {
        matches!(self, PruneKind::Timeline | PruneKind::Ledger)
    }

    /// The rows of this kind older than `$1` (epoch ms) that prune takes,
    /// as a `FROM ... WHERE ...` clause; each is served by an index of
    /// migration 0009.
    fn rows(self) -> &'static str {
        match self {
            PruneKind::EventPayloads => {
                "FROM events WHERE processed_at IS NOT NULL AND pruned_at IS NULL AND received_at < $1"
            }
            PruneKind::Timeline => "FROM timeline WHERE at < $1",
            PruneKind::OutboxBodies => {
                "FROM outbox WHERE pruned_at IS NULL AND state IN ('sent', 'failed', 'cancelled', 'withheld') AND created_at < $1"
            }
            PruneKind::Ledger => "FROM ledger WHERE at < $1",
        }
    }
}

impl Store {
    /// How many rows of `kind` are older than `before` (epoch ms): what a
    /// prune with that cut-off takes.
    pub async fn prunable(&self, kind: PruneKind, before: i64) -> Result<u64, StoreError> {
        let sql = self
            .sql(&format!("SELECT COUNT(*) {}", kind.rows()))
            .into_owned();
        let n: i64 = sqlx::query(&sql)
            .bind(before)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Prunes up to `limit` rows of `kind` older than `before` (epoch ms)
    /// in one short write transaction; `now` is recorded as `pruned_at`.
    /// Returns how many rows it pruned: fewer than `limit` means none is
    /// left.
    pub async fn prune_batch(
        &self,
        kind: PruneKind,
        before: i64,
        now: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        // The row's own identity: SQLite's rowid, PostgreSQL's ctid (the
        // ledger has a two-column key).
        let id = match self.backend {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "ctid",
        };
        let pick = format!("SELECT {id} {} LIMIT $2", kind.rows());
        let sql = match kind {
            PruneKind::Timeline | PruneKind::Ledger => {
                let table = if kind == PruneKind::Timeline {
                    "timeline"
                } else {
                    "ledger"
                };
                format!("DELETE FROM {table} WHERE {id} IN ({pick})")
            }
            PruneKind::EventPayloads => format!(
                "UPDATE events SET payload = '{PRUNED}', pruned_at = $3 WHERE {id} IN ({pick})"
            ),
            // The Message-ID stays: a re-fold must know which drip steps
            // went out (Store::queued_drips).
            PruneKind::OutboxBodies => {
                let body = match self.backend {
                    Backend::Sqlite => {
                        "json_object('pruned', json('true'), 'message_id', payload ->> 'message_id')"
                    }
                    Backend::Postgres => {
                        "json_build_object('pruned', true, 'message_id', payload::json->>'message_id')::text"
                    }
                };
                format!("UPDATE outbox SET payload = {body}, pruned_at = $3 WHERE {id} IN ({pick})")
            }
        };
        let sql = self.sql(&sql).into_owned();
        let mut tx = self.begin_write().await?;
        let mut q = sqlx::query(&sql).bind(before).bind(limit);
        if !kind.deletes() {
            q = q.bind(now);
        }
        let done = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(done)
    }
}
