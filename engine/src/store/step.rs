//! One processing step as a transaction: everything the evaluator decided
//! for a batch of events and due work is written, with the events marked
//! applied, or nothing is. A crash at any point loses nothing and applies
//! nothing twice.
//!
//! The step first writes the one-row `engine_state` table: on PostgreSQL that
//! row lock makes concurrent processes take turns, and on SQLite it takes the
//! write lock up front rather than upgrading a read (which can fail).

use super::{from_millis, millis, Store, StoreError};
use crate::eval::{Book, Timer};
use crate::model::{time::Timestamp, Event, LeadState};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

pub struct StepTx<'s> {
    store: &'s Store,
    tx: Transaction<'static, Any>,
}

/// An accepted event waiting to be applied.
pub struct PendingEvent {
    pub seq: i64,
    pub received_at: Timestamp,
    pub event: Result<Event, String>,
}

impl<'s> StepTx<'s> {
    pub async fn begin(store: &'s Store) -> Result<StepTx<'s>, StoreError> {
        let mut tx = store.pool.begin().await?;
        sqlx::query("UPDATE engine_state SET id = id WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(StepTx { store, tx })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn engine_state(&mut self) -> Result<(Book, Option<Timestamp>), StoreError> {
        let row: AnyRow = sqlx::query("SELECT book, ticked_to FROM engine_state WHERE id = 1")
            .fetch_one(&mut *self.tx)
            .await?;
        let book: String = row.try_get(0)?;
        let ticked: Option<i64> = row.try_get(1)?;
        let book = serde_json::from_str(&book).map_err(|e| StoreError::Corrupt {
            what: "routing book",
            detail: e.to_string(),
        })?;
        Ok((book, ticked.map(from_millis)))
    }

    pub async fn set_engine_state(
        &mut self,
        book: &Book,
        ticked_to: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let book = serde_json::to_string(book).unwrap_or_else(|_| "{}".into());
        let sql = self
            .store
            .sql("UPDATE engine_state SET book = $1, ticked_to = $2 WHERE id = 1");
        sqlx::query(&sql)
            .bind(book)
            .bind(ticked_to.as_ref().map(millis))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The oldest events not yet applied, in arrival order.
    pub async fn pending_events(&mut self, limit: i64) -> Result<Vec<PendingEvent>, StoreError> {
        let sql = self.store.sql("SELECT seq, payload, received_at FROM events WHERE processed_at IS NULL ORDER BY seq LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let payload: String = row.try_get(1)?;
            // Checked on the way in; a row that no longer parses (edited by
            // hand, or erased) is skipped, not retried forever.
            let event = serde_json::from_str(&payload)
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_json(&v, None).map_err(|e| e.to_string()));
            let received_at = from_millis(row.try_get(2)?);
            out.push(PendingEvent {
                seq,
                received_at,
                event,
            });
        }
        Ok(out)
    }

    pub async fn mark_processed(&mut self, seq: i64, now: Timestamp) -> Result<(), StoreError> {
        let sql = self
            .store
            .sql("UPDATE events SET processed_at = $1 WHERE seq = $2");
        sqlx::query(&sql)
            .bind(millis(&now))
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Scheduled work due at or before `now`, earliest first.
    pub async fn due_timers(
        &mut self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<(i64, Timer)>, StoreError> {
        let sql = self
            .store
            .sql("SELECT seq, kind FROM due_work WHERE at <= $1 ORDER BY at, seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(millis(&now))
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let kind: String = row.try_get(1)?;
            let timer: Timer = serde_json::from_str(&kind).map_err(|e| StoreError::Corrupt {
                what: "due work",
                detail: e.to_string(),
            })?;
            out.push((seq, timer));
        }
        Ok(out)
    }

    pub async fn delete_timer(&mut self, seq: i64) -> Result<(), StoreError> {
        let sql = self.store.sql("DELETE FROM due_work WHERE seq = $1");
        sqlx::query(&sql).bind(seq).execute(&mut *self.tx).await?;
        Ok(())
    }

    pub async fn add_timer(&mut self, t: &Timer) -> Result<(), StoreError> {
        let sql = self
            .store
            .sql("INSERT INTO due_work (lead, at, kind) VALUES ($1, $2, $3)");
        let kind = serde_json::to_string(t).unwrap_or_default();
        sqlx::query(&sql)
            .bind(t.lead.clone())
            .bind(millis(&t.at))
            .bind(kind)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn load_lead(&mut self, id: &str) -> Result<Option<LeadState>, StoreError> {
        let sql = self.store.sql("SELECT state FROM leads WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let state: String = row.try_get(0)?;
                serde_json::from_str(&state)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        what: "lead state",
                        detail: e.to_string(),
                    })
            }
        }
    }

    pub async fn lead_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM leads ORDER BY id")
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Writes a lead and the rows derived from it. `before` is the lead as
    /// loaded (None if new): only ledger and transition rows past it are added.
    pub async fn save_lead(
        &mut self,
        before: Option<&LeadState>,
        lead: &LeadState,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let state = serde_json::to_string(lead).map_err(|e| StoreError::Corrupt {
            what: "lead state",
            detail: e.to_string(),
        })?;
        let sql = self.store.sql(
            "INSERT INTO leads (id, email, stage, owner, score, fit, consent, created_at, updated_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, stage = excluded.stage, owner = excluded.owner, \
             score = excluded.score, fit = excluded.fit, consent = excluded.consent, updated_at = excluded.updated_at, \
             state = excluded.state",
        );
        sqlx::query(&sql)
            .bind(lead.id.clone())
            .bind(lead.email.clone())
            .bind(lead.stage.as_str())
            .bind(lead.owner.clone())
            .bind(lead.score)
            .bind(lead.fit)
            .bind(lead.consent.as_str())
            .bind(millis(&lead.created_at))
            .bind(millis(&now))
            .bind(state)
            .execute(&mut *self.tx)
            .await?;

        let ledger_from = before.map_or(0, |b| b.ledger.len());
        let sql = self.store.sql("INSERT INTO ledger (lead, n, rule, points, event, at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        for (n, e) in lead.ledger.iter().enumerate().skip(ledger_from) {
            sqlx::query(&sql)
                .bind(lead.id.clone())
                .bind(n as i64)
                .bind(e.rule.clone())
                .bind(e.points)
                .bind(e.event.clone())
                .bind(millis(&e.at))
                .bind(e.reason.clone())
                .execute(&mut *self.tx)
                .await?;
        }
        let tr_from = before.map_or(0, |b| b.transitions.len());
        let sql = self.store.sql("INSERT INTO transitions (lead, n, from_stage, to_stage, at) VALUES ($1, $2, $3, $4, $5)");
        for (n, t) in lead.transitions.iter().enumerate().skip(tr_from) {
            sqlx::query(&sql)
                .bind(lead.id.clone())
                .bind(n as i64)
                .bind(t.from.as_str())
                .bind(t.to.as_str())
                .bind(millis(&t.at))
                .execute(&mut *self.tx)
                .await?;
        }
        let sql = self.store.sql(
            "INSERT INTO enrollments (lead, campaign, cycle, status, next_step, due_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (lead, campaign, cycle) DO UPDATE SET status = excluded.status, next_step = excluded.next_step, due_at = excluded.due_at",
        );
        for e in &lead.enrollments {
            let unchanged = before.is_some_and(|b| b.enrollments.contains(e));
            if unchanged {
                continue;
            }
            let status = serde_json::to_value(e.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            sqlx::query(&sql)
                .bind(lead.id.clone())
                .bind(e.campaign.clone())
                .bind(e.cycle as i64)
                .bind(status)
                .bind(e.next_step as i64)
                .bind(e.due_at.as_ref().map(millis))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    pub async fn timeline(
        &mut self,
        lead: &str,
        at: Timestamp,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let sql = self
            .store
            .sql("INSERT INTO timeline (lead, at, kind, detail) VALUES ($1, $2, $3, $4)");
        sqlx::query(&sql)
            .bind(lead.to_string())
            .bind(millis(&at))
            .bind(kind.to_string())
            .bind(detail.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn outbox(
        &mut self,
        lead: &str,
        kind: &str,
        payload: &serde_json::Value,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = self
            .store
            .sql("INSERT INTO outbox (lead, kind, payload, created_at) VALUES ($1, $2, $3, $4)");
        sqlx::query(&sql)
            .bind(lead.to_string())
            .bind(kind.to_string())
            .bind(payload.to_string())
            .bind(millis(&now))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
