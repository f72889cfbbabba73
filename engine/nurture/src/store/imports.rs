//! Imports of history under way: while one is open, due work waits at its
//! frontier, the latest time among the events it has stored, so that a
//! history posted batch by batch is applied with its due work in the order
//! of time, as `simulate` applies it (migrations/*/0008_imports.sql).

use super::{from_millis, millis, Store, StoreError};
use crate::model::time::Timestamp;
use sqlx::Row;

/// An import not heard from for this long holds nothing back (a client
/// that died mid-way; running `nurture import` again resumes it).
pub const IMPORT_EXPIRES_MS: i64 = 120_000;

impl Store {
    /// Opens an import: from now until it closes or expires, due work
    /// waits for its events. Returns its id.
    pub async fn open_import(&self, now: Timestamp) -> Result<String, StoreError> {
        let now_ms = millis(&now);
        let gone = self.sql("DELETE FROM imports WHERE heartbeat <= $1");
        sqlx::query(&gone)
            .bind(now_ms - IMPORT_EXPIRES_MS)
            .execute(&self.writer)
            .await?;
        let id = format!(
            "import-{}-{:04x}",
            now.format("%Y%m%dT%H%M%S%.6f"),
            std::process::id() & 0xffff
        );
        let sql = self.sql("INSERT INTO imports (id, frontier, heartbeat) VALUES ($1, $2, $3)");
        sqlx::query(&sql)
            .bind(&id)
            .bind(i64::MIN)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        Ok(id)
    }

    /// Records that import `id` has stored events up to `frontier`. False
    /// for an import that is not open (closed, expired, or never opened).
    pub async fn import_stored(
        &self,
        id: &str,
        frontier: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE imports SET heartbeat = $2, \
             frontier = CASE WHEN frontier < $3 THEN $3 ELSE frontier END \
             WHERE id = $1 AND heartbeat > $4",
        );
        let now_ms = millis(&now);
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(now_ms)
            .bind(frontier.as_ref().map_or(i64::MIN, millis))
            .bind(now_ms - IMPORT_EXPIRES_MS)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes import `id`; false if it was not open.
    pub async fn close_import(&self, id: &str) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM imports WHERE id = $1");
        let done = sqlx::query(&sql).bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }

    /// How far due work may run while imports are open: the lowest
    /// frontier of those alive; `None` when none is.
    pub async fn import_frontier(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        let sql = self.sql("SELECT MIN(frontier) FROM imports WHERE heartbeat > $1");
        let row = sqlx::query(&sql)
            .bind(millis(&now) - IMPORT_EXPIRES_MS)
            .fetch_one(&self.pool)
            .await?;
        let min: Option<i64> = row.try_get(0)?;
        // Before its first events: no due work at all.
        Ok(min.map(|m| {
            if m == i64::MIN {
                Timestamp::MIN_UTC
            } else {
                from_millis(m)
            }
        }))
    }
}
