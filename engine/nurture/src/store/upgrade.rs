//! Moves what version 1 kept in a lead's stored state into version 2's
//! tables. Version 1 stored each lead's whole history in its `state`
//! column and rewrote it with every change; version 2 stores the history in
//! append-only tables (migration 0005) and a bounded state. `migrate` runs
//! this after the SQL migrations; it is idempotent, and a lead not yet
//! moved still reads (`rows::parse_stored` rebuilds its memory from the
//! history it holds), so an upgrade cut short loses nothing.

use super::step::insert_history;
use super::{Store, StoreError};
use nurture_core::rows::{parse_stored, HistoryRows};
use sqlx::Row;

/// Leads upgraded per transaction.
const CHUNK: i64 = 500;

impl Store {
    /// Upgrades every lead whose state still holds its history: the history
    /// goes to its tables (what is there already stays), the state is
    /// written back without it. A lead is upgraded whole or not at all.
    /// Returns how many were.
    pub async fn upgrade_states(&self) -> Result<u64, StoreError> {
        let mut after = String::new();
        let mut upgraded = 0;
        loop {
            // Only an old state has an array under a "ledger" key (or one
            // of its attributes does: parse_stored tells them apart).
            let sql = self.sql(
                "SELECT id, state FROM leads WHERE id > $1 AND state LIKE '%\"ledger\":[%' ORDER BY id LIMIT $2",
            );
            let rows = sqlx::query(&sql)
                .bind(after.clone())
                .bind(CHUNK)
                .fetch_all(&self.writer)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(upgraded);
            };
            after = last.try_get(0)?;
            let mut tx = self.begin_write().await?;
            // What a processing step read changes: one under way redoes.
            sqlx::query("UPDATE engine_state SET version = version + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            for row in &rows {
                let id: String = row.try_get(0)?;
                let text: String = row.try_get(1)?;
                // An unreadable state stays as it is (its lead is set aside
                // when next touched, as before).
                let Ok((lead, Some(history))) = parse_stored(&text) else {
                    continue;
                };
                let state = serde_json::to_string(&lead).map_err(|e| StoreError::Corrupt {
                    what: "lead state",
                    detail: e.to_string(),
                })?;
                insert_history(
                    self,
                    &mut tx,
                    HistoryRows::of(&id, &history),
                    " ON CONFLICT (lead, n) DO NOTHING",
                )
                .await?;
                let sql = self.sql("UPDATE leads SET state = $1 WHERE id = $2");
                sqlx::query(&sql)
                    .bind(state)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                upgraded += 1;
            }
            tx.commit().await?;
        }
    }
}
