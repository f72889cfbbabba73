//! The timeline's one insert path: every entry, whoever makes it (a step's
//! decisions, the outbox's outcomes, a release from quarantine, an erasure),
//! goes in here, typed ([`Entry`], [`TimelineKind`](nurture_core::writes::TimelineKind)).

use super::{millis, Store, StoreError};
use nurture_core::writes::Entry;

/// Rows per INSERT: 4 parameters each, well under both backends' limits.
const ROWS: usize = 500;

impl Store {
    /// Inserts `entries` on `conn` (within the caller's write transaction).
    pub(crate) async fn insert_timeline(
        &self,
        conn: &mut sqlx::AnyConnection,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        for chunk in entries.chunks(ROWS) {
            let mut q = String::from("INSERT INTO timeline (lead, at, kind, detail) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    q.push(',');
                }
                let b = i * 4;
                q.push_str(&format!("(${},${},${},${})", b + 1, b + 2, b + 3, b + 4));
            }
            let sql = self.sql(&q).into_owned();
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.lead.clone())
                    .bind(millis(&e.at))
                    .bind(e.kind.as_str())
                    .bind(e.detail.to_string());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}
