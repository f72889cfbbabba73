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
use sqlx::{Any, Row};

pub struct StepTx<'s> {
    store: &'s Store,
    tx: super::WriteTx,
}

/// An accepted event waiting to be applied.
/// The processor's own progress, one row.
pub struct EngineState {
    /// Round-robin and load counters for routing.
    pub book: Book,
    /// The time up to which `schedule` ticks have run.
    pub ticked_to: Option<Timestamp>,
    /// Within the tick after `ticked_to`, the last lead id done: the tick is
    /// part done and resumes after it before anything else runs.
    pub tick_after: Option<String>,
}

pub struct PendingEvent {
    pub seq: i64,
    pub received_at: Timestamp,
    pub event: Result<Event, String>,
}

impl<'s> StepTx<'s> {
    pub async fn begin(store: &'s Store) -> Result<StepTx<'s>, StoreError> {
        let mut tx = store.begin_write().await?;
        sqlx::query("UPDATE engine_state SET id = id WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(StepTx { store, tx })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn engine_state(&mut self) -> Result<EngineState, StoreError> {
        let row: AnyRow =
            sqlx::query("SELECT book, ticked_to, tick_after FROM engine_state WHERE id = 1")
                .fetch_one(&mut *self.tx)
                .await?;
        let book: String = row.try_get(0)?;
        let ticked: Option<i64> = row.try_get(1)?;
        let tick_after: Option<String> = row.try_get(2)?;
        let book = serde_json::from_str(&book).map_err(|e| StoreError::Corrupt {
            what: "routing book",
            detail: e.to_string(),
        })?;
        Ok(EngineState {
            book,
            ticked_to: ticked.map(from_millis),
            tick_after,
        })
    }

    pub async fn set_engine_state(&mut self, s: &EngineState) -> Result<(), StoreError> {
        let book = serde_json::to_string(&s.book).unwrap_or_else(|_| "{}".into());
        let sql = self
            .store
            .sql("UPDATE engine_state SET book = $1, ticked_to = $2, tick_after = $3 WHERE id = 1");
        sqlx::query(&sql)
            .bind(book)
            .bind(s.ticked_to.as_ref().map(millis))
            .bind(s.tick_after.clone())
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

    /// Up to `limit` stored lead ids after `after`, in byte order.
    pub async fn lead_ids_after(
        &mut self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let sql = self
            .store
            .sql("SELECT id FROM leads WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or("").to_string())
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Loads the leads among `ids` that exist, in one query per 500.
    pub async fn load_leads(&mut self, ids: &[String]) -> Result<Vec<LeadState>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = self
                .store
                .sql(&format!("SELECT state FROM leads WHERE id IN ({list})"))
                .into_owned();
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let state: String = row.try_get(0)?;
                out.push(
                    serde_json::from_str(&state).map_err(|e| StoreError::Corrupt {
                        what: "lead state",
                        detail: e.to_string(),
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// Writes everything a step decided, in as few statements as the
    /// databases' parameter limits allow.
    pub async fn write(&mut self, w: &Writes, now: Timestamp) -> Result<(), StoreError> {
        let now_ms = millis(&now);
        if !w.processed.is_empty() {
            self.exec_in(
                "UPDATE events SET processed_at = $1 WHERE seq IN",
                vec![Arg::Int(now_ms)],
                &w.processed,
            )
            .await?;
        }
        if !w.timers_done.is_empty() {
            self.exec_in("DELETE FROM due_work WHERE seq IN", vec![], &w.timers_done)
                .await?;
        }
        let timers = w.timers_new.iter().map(|t| {
            vec![
                Arg::Text(t.lead.clone()),
                Arg::Int(millis(&t.at)),
                Arg::Text(serde_json::to_string(t).unwrap_or_default()),
            ]
        });
        self.insert(
            "INSERT INTO due_work (lead, at, kind)",
            3,
            timers.collect(),
            "",
        )
        .await?;

        let mut leads = Vec::new();
        let mut ledger = Vec::new();
        let mut transitions = Vec::new();
        let mut enrollments = Vec::new();
        for (before, lead) in &w.leads {
            let state = serde_json::to_string(lead).map_err(|e| StoreError::Corrupt {
                what: "lead state",
                detail: e.to_string(),
            })?;
            leads.push(vec![
                Arg::Text(lead.id.clone()),
                Arg::Text(lead.email.clone()),
                Arg::Text(lead.stage.as_str().into()),
                Arg::OptText(lead.owner.clone()),
                Arg::Int(lead.score),
                Arg::Int(lead.fit),
                Arg::Text(lead.consent.as_str().into()),
                Arg::Int(millis(&lead.created_at)),
                Arg::Int(now_ms),
                Arg::Text(state),
            ]);
            let from = before.as_ref().map_or(0, |b| b.ledger.len());
            for (n, e) in lead.ledger.iter().enumerate().skip(from) {
                ledger.push(vec![
                    Arg::Text(lead.id.clone()),
                    Arg::Int(n as i64),
                    Arg::Text(e.rule.clone()),
                    Arg::Int(e.points),
                    Arg::OptText(e.event.clone()),
                    Arg::Int(millis(&e.at)),
                    Arg::OptText(e.reason.clone()),
                ]);
            }
            let from = before.as_ref().map_or(0, |b| b.transitions.len());
            for (n, t) in lead.transitions.iter().enumerate().skip(from) {
                transitions.push(vec![
                    Arg::Text(lead.id.clone()),
                    Arg::Int(n as i64),
                    Arg::Text(t.from.as_str().into()),
                    Arg::Text(t.to.as_str().into()),
                    Arg::Int(millis(&t.at)),
                ]);
            }
            for e in &lead.enrollments {
                if before.as_ref().is_some_and(|b| b.enrollments.contains(e)) {
                    continue;
                }
                let status = serde_json::to_value(e.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                enrollments.push(vec![
                    Arg::Text(lead.id.clone()),
                    Arg::Text(e.campaign.clone()),
                    Arg::Int(e.cycle as i64),
                    Arg::Text(status),
                    Arg::Int(e.next_step as i64),
                    Arg::OptInt(e.due_at.as_ref().map(millis)),
                ]);
            }
        }
        self.insert(
            "INSERT INTO leads (id, email, stage, owner, score, fit, consent, created_at, updated_at, state)",
            10,
            leads,
            " ON CONFLICT (id) DO UPDATE SET email = excluded.email, stage = excluded.stage, owner = excluded.owner, \
             score = excluded.score, fit = excluded.fit, consent = excluded.consent, updated_at = excluded.updated_at, \
             state = excluded.state",
        )
        .await?;
        self.insert(
            "INSERT INTO ledger (lead, n, rule, points, event, at, reason)",
            7,
            ledger,
            "",
        )
        .await?;
        self.insert(
            "INSERT INTO transitions (lead, n, from_stage, to_stage, at)",
            5,
            transitions,
            "",
        )
        .await?;
        self.insert(
            "INSERT INTO enrollments (lead, campaign, cycle, status, next_step, due_at)",
            6,
            enrollments,
            " ON CONFLICT (lead, campaign, cycle) DO UPDATE SET status = excluded.status, next_step = excluded.next_step, due_at = excluded.due_at",
        )
        .await?;
        let timeline = w.timeline.iter().map(|(lead, at, kind, detail)| {
            vec![
                Arg::Text(lead.clone()),
                Arg::Int(millis(at)),
                Arg::Text((*kind).into()),
                Arg::Text(detail.to_string()),
            ]
        });
        self.insert(
            "INSERT INTO timeline (lead, at, kind, detail)",
            4,
            timeline.collect(),
            "",
        )
        .await?;
        let outbox = w.outbox.iter().map(|(lead, kind, payload)| {
            vec![
                Arg::Text(lead.clone()),
                Arg::Text((*kind).into()),
                Arg::Text(payload.to_string()),
                Arg::Int(now_ms),
            ]
        });
        self.insert(
            "INSERT INTO outbox (lead, kind, payload, created_at)",
            4,
            outbox.collect(),
            "",
        )
        .await?;
        Ok(())
    }

    /// `head VALUES (...), (...) tail`, as many rows per statement as fit.
    async fn insert(
        &mut self,
        head: &str,
        cols: usize,
        rows: Vec<Vec<Arg>>,
        tail: &str,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks((MAX_PARAMS / cols).max(1)) {
            let mut q = format!("{head} VALUES ");
            for (r, _) in chunk.iter().enumerate() {
                if r > 0 {
                    q.push(',');
                }
                q.push('(');
                for c in 0..cols {
                    if c > 0 {
                        q.push(',');
                    }
                    q.push_str(&format!("${}", r * cols + c + 1));
                }
                q.push(')');
            }
            q.push_str(tail);
            let sql = self.store.sql(&q).into_owned();
            let mut query = sqlx::query(&sql);
            for row in chunk {
                for a in row {
                    query = a.bind(query);
                }
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// `sql ($k, ...)` over `ids`, after the leading `args`.
    async fn exec_in(&mut self, sql: &str, args: Vec<Arg>, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(MAX_PARAMS) {
            let first = args.len() + 1;
            let list = (first..first + chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let q = self.store.sql(&format!("{sql} ({list})")).into_owned();
            let mut query = sqlx::query(&q);
            for a in &args {
                query = a.bind(query);
            }
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

/// Parameters per statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMS: usize = 2000;

/// A value to bind.
#[derive(Clone)]
enum Arg {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl Arg {
    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Arg::Int(i) => q.bind(*i),
            Arg::Text(s) => q.bind(s.clone()),
            Arg::OptText(s) => q.bind(s.clone()),
            Arg::OptInt(i) => q.bind(*i),
        }
    }
}

/// What one step writes, collected while it runs.
#[derive(Default)]
pub struct Writes {
    /// Events applied (or skipped as unreadable).
    pub processed: Vec<i64>,
    /// Stored timers that ran.
    pub timers_done: Vec<i64>,
    /// Timers made in this step that did not run in it.
    pub timers_new: Vec<Timer>,
    /// Leads that changed: as loaded, and as they are now.
    pub leads: Vec<(Option<LeadState>, LeadState)>,
    pub timeline: Vec<(String, Timestamp, &'static str, serde_json::Value)>,
    pub outbox: Vec<(String, &'static str, serde_json::Value)>,
}
