//! Moves what version 1 kept in a lead's stored state into version 2's
//! tables. Version 1 stored each lead's whole history in its `state`
//! column and rewrote it with every change; version 2 stores the history in
//! append-only tables (migration 0005) and a bounded state. `migrate` runs
//! this after the SQL migrations; it is idempotent, and a lead not yet
//! moved still reads (`rows::parse_stored` rebuilds its memory from the
//! history it holds), so an upgrade cut short loses nothing.
//!
//! It also gives rows stored before partitions (migration 0006) their
//! partition: leads, due work and the events not yet applied.

use super::step::insert_history;
use super::{Store, StoreError};
use nurture_core::rows::{parse_stored, HistoryRows};
use sqlx::Row;

/// Leads upgraded per transaction.
const CHUNK: i64 = 500;

/// The tables whose rows carry a partition, with their key, and which of
/// their rows need one.
const PARTED: [(&str, &str, &str); 3] = [
    ("leads", "id", "part IS NULL"),
    ("due_work", "seq", "part IS NULL"),
    ("events", "seq", "part IS NULL AND processed_at IS NULL"),
];

impl Store {
    /// Sets the partition of every row stored without one, a chunk per
    /// transaction; returns how many rows.
    pub async fn assign_partitions(&self) -> Result<u64, StoreError> {
        let mut done = 0;
        for (table, key, which) in PARTED {
            let lead = if table == "leads" { "id" } else { "lead" };
            // Keyset paging: each chunk starts after the last key seen.
            let (mut after_text, mut after_seq) = (String::new(), i64::MIN);
            loop {
                let sql = self
                    .sql(&format!(
                        "SELECT {key}, {lead} FROM {table} WHERE {key} > $1 AND {which} \
                         ORDER BY {key} LIMIT {CHUNK}"
                    ))
                    .into_owned();
                let q = sqlx::query(&sql);
                let q = if key == "id" {
                    q.bind(after_text.clone())
                } else {
                    q.bind(after_seq)
                };
                let rows = q.fetch_all(&self.writer).await?;
                let Some(last) = rows.last() else {
                    break;
                };
                if key == "id" {
                    after_text = last.try_get(0)?;
                } else {
                    after_seq = last.try_get(0)?;
                }
                // Grouped by partition: one UPDATE per partition present.
                let mut by_part: std::collections::BTreeMap<i64, Vec<&sqlx::any::AnyRow>> =
                    std::collections::BTreeMap::new();
                for row in &rows {
                    let lead: String = row.try_get(1)?;
                    by_part.entry(self.part_of(&lead)).or_default().push(row);
                }
                let mut tx = self.begin_write().await?;
                for (part, rows) in by_part {
                    let list = (2..rows.len() + 2)
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let sql = self
                        .sql(&format!(
                            "UPDATE {table} SET part = $1 WHERE {key} IN ({list})"
                        ))
                        .into_owned();
                    let mut q = sqlx::query(&sql).bind(part);
                    for row in rows {
                        q = if key == "id" {
                            q.bind(row.try_get::<String, _>(0)?)
                        } else {
                            q.bind(row.try_get::<i64, _>(0)?)
                        };
                    }
                    done += q.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(done)
    }

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
            sqlx::query("UPDATE partitions SET version = version + 1")
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
                let sql = self.sql("UPDATE leads SET state = $1, tick_rules = NULL WHERE id = $2");
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
