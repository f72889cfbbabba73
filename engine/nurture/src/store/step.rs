//! One processing step against the database, in two phases, so that the
//! evaluator and its plugins never run while a write lock is held:
//!
//! 1. Reads, through the read pool and without any lock: the processor's own
//!    progress with its version ([`Store::engine_state`]), pending events,
//!    due work, leads. Leads set aside (`quarantine`) are left out.
//! 2. [`StepTx`]: everything the evaluator decided, written with the events
//!    marked applied, in one transaction that first checks that the version
//!    it read is still current. Every writer of what a step reads bumps it
//!    (a step, an erasure, a release from quarantine), so if anything the
//!    step read changed meanwhile, nothing is written and the step is done
//!    again. A crash at any point loses nothing and applies nothing twice.
//!
//! A step works on one partition (docs/daemon.md, Partitions): its events,
//! due work and leads, and its row in `partitions` (version, where ticks
//! stand). The version check writes that row first: on PostgreSQL the row
//! lock makes concurrent commits of the same partition take turns (the
//! second sees the version moved and redoes its step) while other
//! partitions commit alongside, and on SQLite it takes the write lock up
//! front rather than upgrading a read (which can fail). The routing book is
//! shared by all partitions: a step that changed it also checks the book's
//! own version, so owners' loads and rotations stay exact.
//!
//! What a lead becomes in its rows is `nurture_core::rows`, shared with the
//! fuzz target that checks every value reads back.

use super::{from_millis, millis, Store, StoreError};
use crate::eval::{Book, Timer};
use crate::model::{time::Timestamp, Event, LeadState};
use nurture_core::rows::{parse_state, HistoryRows, LeadRows};
use nurture_core::writes::{Entry, Queued, TimelineKind};
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

pub struct StepTx<'s> {
    store: &'s Store,
    tx: super::WriteTx,
    /// Whether the step changed the routing book (it then writes it).
    book_changed: bool,
}

/// The processor's progress in one partition, and the shared routing book.
pub struct EngineState {
    /// The partition.
    pub part: i64,
    /// Round-robin and load counters for routing.
    pub book: Book,
    /// Bumped by every write of the book.
    pub book_version: i64,
    /// The time up to which `schedule` ticks have run.
    pub ticked_to: Option<Timestamp>,
    /// Within the tick after `ticked_to`, the last lead id done: the tick is
    /// part done and resumes after it before anything else runs.
    pub tick_after: Option<String>,
    /// Bumped by every write of what a step reads; a step commits only if
    /// it is unchanged since the step read it.
    pub version: i64,
}

/// Where another partition stands (`Store::other_partitions`).
pub struct OtherPartition {
    pub part: i64,
    /// Where its `schedule` ticks stand, and whether one is part done.
    pub ticked_to: Option<Timestamp>,
    pub resuming: bool,
    /// The time of its next event, and of its earliest due work.
    pub event_at: Option<Timestamp>,
    pub timer_at: Option<Timestamp>,
}

/// An accepted event waiting to be applied.
pub struct PendingEvent {
    pub seq: i64,
    pub received_at: Timestamp,
    pub event: Result<Event, String>,
}

/// A stored timer that is due; `timer` is the reason when its row does not
/// parse (its lead is then set aside).
pub struct DueTimer {
    pub seq: i64,
    pub lead: String,
    pub timer: Result<Timer, String>,
}

/// A stored lead; `state` is the reason when its row does not read back.
pub struct StoredLead {
    pub id: String,
    pub state: Result<LeadState, String>,
    /// The rules its tick wake was computed under (`leads.tick_rules`).
    pub tick_rules: Option<i64>,
}

/// The quarantine filter on a table's `lead` column.
const NOT_QUARANTINED: &str = "NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.lead = ";

impl Store {
    /// The processor's progress in `part` with its version, and the book,
    /// read without a lock.
    pub async fn engine_state(&self, part: i64) -> Result<EngineState, StoreError> {
        let sql = self.sql(
            "SELECT e.book, p.ticked_to, p.tick_after, p.version, e.book_version \
             FROM engine_state e, partitions p WHERE e.id = 1 AND p.id = $1",
        );
        let row: AnyRow = sqlx::query(&sql).bind(part).fetch_one(&self.pool).await?;
        let book: String = row.try_get(0)?;
        let ticked: Option<i64> = row.try_get(1)?;
        let tick_after: Option<String> = row.try_get(2)?;
        let book = serde_json::from_str(&book).map_err(|e| StoreError::Corrupt {
            what: "routing book",
            detail: e.to_string(),
        })?;
        Ok(EngineState {
            part,
            book,
            book_version: row.try_get(4)?,
            ticked_to: ticked.map(from_millis),
            tick_after,
            version: row.try_get(3)?,
        })
    }

    /// The oldest events of `part` not yet applied, in arrival order, but
    /// for leads in quarantine.
    pub async fn pending_events(
        &self,
        part: i64,
        limit: i64,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        let sql = self
            .sql(&format!(
                "SELECT e.seq, e.payload, e.received_at FROM events e \
             WHERE e.part = $1 AND e.processed_at IS NULL AND {NOT_QUARANTINED}e.lead) \
             ORDER BY e.seq LIMIT $2"
            ))
            .into_owned();
        let rows = sqlx::query(&sql)
            .bind(part)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let payload: String = row.try_get(1)?;
            // Checked on the way in; a row that no longer parses (edited by
            // hand, or erased) is skipped, not retried forever.
            let event = serde_json::from_str(&payload)
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_stored(&v).map_err(|e| e.to_string()));
            let received_at = from_millis(row.try_get(2)?);
            out.push(PendingEvent {
                seq,
                received_at,
                event,
            });
        }
        Ok(out)
    }

    /// The events applied to `lead` so far, in arrival order: what a late
    /// event is re-folded with (sim::refold), and whether any of them was
    /// pruned (retention): then the history is not whole. Rows that no
    /// longer read back (erased) are left out.
    pub async fn applied_events(&self, lead: &str) -> Result<(Vec<Event>, bool), StoreError> {
        let sql = self.sql(
            "SELECT payload, pruned_at FROM events WHERE lead = $1 AND processed_at IS NOT NULL ORDER BY seq",
        );
        let rows = sqlx::query(&sql).bind(lead).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut pruned = false;
        for row in rows {
            pruned |= row.try_get::<Option<i64>, _>(1)?.is_some();
            let payload: String = row.try_get(0)?;
            let event = serde_json::from_str(&payload)
                .ok()
                .and_then(|v| Event::from_stored(&v).ok());
            out.extend(event);
        }
        Ok((out, pruned))
    }

    /// The Message-IDs of the drip emails queued for `lead`: a re-fold
    /// sends no step twice.
    pub async fn queued_drips(&self, lead: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql("SELECT payload FROM outbox WHERE lead = $1 AND kind = 'email'");
        let rows = sqlx::query(&sql).bind(lead).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let payload: String = row.try_get(0)?;
            let id = serde_json::from_str::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v["message_id"].as_str().map(str::to_string));
            out.extend(id);
        }
        Ok(out)
    }

    /// Scheduled work of `part` due at or before `now`, earliest first, but
    /// for leads in quarantine.
    pub async fn due_timers(
        &self,
        part: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let sql = self
            .sql(&format!(
                "SELECT d.seq, d.lead, d.kind FROM due_work d \
             WHERE d.part = $1 AND d.at <= $2 AND {NOT_QUARANTINED}d.lead) \
             ORDER BY d.at, d.seq LIMIT $3"
            ))
            .into_owned();
        let rows = sqlx::query(&sql)
            .bind(part)
            .bind(millis(&now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get(2)?;
            out.push(DueTimer {
                seq: row.try_get(0)?,
                lead: row.try_get(1)?,
                timer: serde_json::from_str(&kind)
                    .map_err(|e| format!("stored due work unreadable: {e}")),
            });
        }
        Ok(out)
    }

    /// Where every partition but `part` stands: the time of the next event
    /// it applies (its first pending one: a partition applies its events in
    /// arrival order), its earliest due work (at or before `now`), and its
    /// schedule; leads in quarantine left out. One query, an index lookup
    /// per partition.
    pub async fn other_partitions(
        &self,
        now: Timestamp,
        part: i64,
    ) -> Result<Vec<OtherPartition>, StoreError> {
        let sql = self
            .sql(&format!(
                "SELECT p.id, p.ticked_to, p.tick_after, \
                 (SELECT e.at FROM events e WHERE e.part = p.id AND e.processed_at IS NULL \
                  AND {NOT_QUARANTINED}e.lead) ORDER BY e.seq LIMIT 1), \
                 (SELECT d.at FROM due_work d WHERE d.part = p.id AND d.at <= $1 \
                  AND {NOT_QUARANTINED}d.lead) ORDER BY d.at LIMIT 1) \
                 FROM partitions p WHERE p.id <> $2"
            ))
            .into_owned();
        let rows = sqlx::query(&sql)
            .bind(millis(&now))
            .bind(part)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let ticked: Option<i64> = row.try_get(1)?;
            let after: Option<String> = row.try_get(2)?;
            let event: Option<i64> = row.try_get(3)?;
            let timer: Option<i64> = row.try_get(4)?;
            out.push(OtherPartition {
                part: row.try_get(0)?,
                ticked_to: ticked.map(from_millis),
                resuming: after.is_some(),
                event_at: event.map(from_millis),
                timer_at: timer.map(from_millis),
            });
        }
        Ok(out)
    }

    /// Up to `limit` stored lead ids of `part` after `after`, in byte
    /// order, but for leads in quarantine: those a tick at `tick.0` (ms)
    /// may change, by their wake stored under the rules `tick.1`
    /// (eval::Wake; a wake stored under other rules counts as due).
    pub async fn lead_ids_after(
        &self,
        part: i64,
        after: Option<&str>,
        limit: i64,
        tick: (i64, i64),
    ) -> Result<Vec<String>, StoreError> {
        let sql = self
            .sql(&format!(
            "SELECT l.id FROM leads l WHERE l.part = $1 AND l.id > $2 AND {NOT_QUARANTINED}l.id) \
             AND (l.tick_rules IS NULL OR l.tick_rules <> $4 OR l.tick_at <= $5) \
             ORDER BY l.id LIMIT $3"
        ))
            .into_owned();
        let rows = sqlx::query(&sql)
            .bind(part)
            .bind(after.unwrap_or("").to_string())
            .bind(limit)
            .bind(tick.1)
            .bind(tick.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// The leads among `ids` that exist, in one query per 500; each read
    /// back, or the reason it does not.
    pub async fn load_leads(&self, ids: &[String]) -> Result<Vec<StoredLead>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = self
                .sql(&format!(
                    "SELECT id, state, tick_rules FROM leads WHERE id IN ({list})"
                ))
                .into_owned();
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                let state: String = row.try_get(1)?;
                out.push(StoredLead {
                    id: row.try_get(0)?,
                    state: parse_state(&state),
                    tick_rules: row.try_get(2)?,
                });
            }
        }
        Ok(out)
    }
}

impl<'s> StepTx<'s> {
    /// Begins the write of a step that read `read` (its partition's version
    /// and, if `book_changed`, the book's); `None` if something the step read
    /// has changed since (nothing is written then).
    pub async fn begin(
        store: &'s Store,
        read: &EngineState,
        book_changed: bool,
    ) -> Result<Option<StepTx<'s>>, StoreError> {
        let mut tx = store.begin_write().await?;
        let sql =
            store.sql("UPDATE partitions SET version = version + 1 WHERE id = $1 AND version = $2");
        let moved = sqlx::query(&sql)
            .bind(read.part)
            .bind(read.version)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 0;
        // Dropping the transaction rolls it back.
        if moved {
            return Ok(None);
        }
        if book_changed {
            // Held to the commit: other partitions' changes of the book wait
            // for it, then find the version moved and redo their step.
            let sql = store.sql(
                "UPDATE engine_state SET book_version = book_version + 1 \
                 WHERE id = 1 AND book_version = $1",
            );
            let moved = sqlx::query(&sql)
                .bind(read.book_version)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 0;
            if moved {
                return Ok(None);
            }
        }
        Ok(Some(StepTx {
            store,
            tx,
            book_changed,
        }))
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Where the partition's ticks stand now, and the book if it changed.
    pub async fn set_engine_state(&mut self, s: &EngineState) -> Result<(), StoreError> {
        let sql = self
            .store
            .sql("UPDATE partitions SET ticked_to = $1, tick_after = $2 WHERE id = $3");
        sqlx::query(&sql)
            .bind(s.ticked_to.as_ref().map(millis))
            .bind(s.tick_after.clone())
            .bind(s.part)
            .execute(&mut *self.tx)
            .await?;
        if self.book_changed {
            let book = serde_json::to_string(&s.book).unwrap_or_else(|_| "{}".into());
            let sql = self
                .store
                .sql("UPDATE engine_state SET book = $1 WHERE id = 1");
            sqlx::query(&sql).bind(book).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Writes everything a step decided, in as few statements as the
    /// databases' parameter limits allow. `leads` are the rows of
    /// `w.leads`, made (and checked) by [`lead_rows`] before the write lock.
    pub async fn write(
        &mut self,
        w: &Writes,
        leads: Vec<LeadRows>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
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
        // Re-folded leads: their ledger and transitions are written whole
        // again, and their drip steps scheduled again (SLA clocks stay).
        for chunk in w.refolded.chunks(MAX_PARAMS) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            for sql in [
                format!("DELETE FROM ledger WHERE lead IN ({list})"),
                format!("DELETE FROM transitions WHERE lead IN ({list})"),
                format!(
                    "DELETE FROM due_work WHERE lead IN ({list}) AND kind LIKE '%\"type\":\"drip\"%'"
                ),
            ] {
                let sql = self.store.sql(&sql).into_owned();
                let mut q = sqlx::query(&sql);
                for lead in chunk {
                    q = q.bind(lead.clone());
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        let timers = w.timers_new.iter().map(|t| {
            vec![
                Arg::Text(t.lead.clone()),
                Arg::Int(millis(&t.at)),
                Arg::Text(serde_json::to_string(t).unwrap_or_default()),
                Arg::Int(self.store.part_of(&t.lead)),
            ]
        });
        self.insert(
            "INSERT INTO due_work (lead, at, kind, part)",
            4,
            timers.collect(),
            "",
        )
        .await?;

        let mut rows = Vec::new();
        let mut history = HistoryRows::default();
        let mut enrollments = Vec::new();
        for (i, r) in leads.into_iter().enumerate() {
            let mut row = r.lead;
            // The first column is the id (rows::LEAD_COLUMNS).
            let part = match row.first() {
                Some(Arg::Text(id)) => self.store.part_of(id),
                _ => 0,
            };
            row.push(Arg::Int(part));
            // Without a wake (none computed), the lead counts as due.
            let wake = w.ticks.at.get(i).copied().flatten();
            row.push(Arg::OptInt(wake));
            row.push(Arg::OptInt(w.ticks.key.filter(|_| i < w.ticks.at.len())));
            rows.push(row);
            history.extend(r.history);
            enrollments.extend(r.enrollments);
        }
        let leads = rows;
        self.insert(
            "INSERT INTO leads (id, email, stage, owner, score, fit, consent, created_at, updated_at, state, part, tick_at, tick_rules)",
            13,
            leads,
            " ON CONFLICT (id) DO UPDATE SET email = excluded.email, stage = excluded.stage, owner = excluded.owner, \
             score = excluded.score, fit = excluded.fit, consent = excluded.consent, updated_at = excluded.updated_at, \
             state = excluded.state, tick_at = excluded.tick_at, tick_rules = excluded.tick_rules",
        )
        .await?;
        self.refresh_wakes(&w.ticks).await?;
        insert_history(self.store, &mut self.tx, history, "").await?;
        self.insert(
            "INSERT INTO enrollments (lead, campaign, cycle, status, next_step, due_at)",
            6,
            enrollments,
            " ON CONFLICT (lead, campaign, cycle) DO UPDATE SET status = excluded.status, next_step = excluded.next_step, due_at = excluded.due_at",
        )
        .await?;
        let quarantined = w.quarantine.iter().map(|(lead, cause)| {
            Entry::new(
                lead.clone(),
                now,
                TimelineKind::Quarantined,
                serde_json::json!({ "cause": cause }),
            )
        });
        let timeline: Vec<Entry> = w.timeline.iter().cloned().chain(quarantined).collect();
        self.store.insert_timeline(&mut self.tx, &timeline).await?;
        let outbox = w.outbox.iter().map(|q| {
            vec![
                Arg::Text(q.lead.clone()),
                Arg::Text(q.kind.as_str().into()),
                Arg::Text(q.payload.to_string()),
                Arg::Int(now_ms),
                // Imported history: kept as decided, never claimed (not OPEN).
                Arg::Text(if q.withheld { "withheld" } else { "pending" }.into()),
            ]
        });
        self.insert(
            "INSERT INTO outbox (lead, kind, payload, created_at, state)",
            5,
            outbox.collect(),
            "",
        )
        .await?;
        let quarantine = w.quarantine.iter().map(|(lead, cause)| {
            vec![
                Arg::Text(lead.clone()),
                Arg::Text(cause.clone()),
                Arg::Int(now_ms),
            ]
        });
        self.insert(
            "INSERT INTO quarantine (lead, cause, at)",
            3,
            quarantine.collect(),
            " ON CONFLICT (lead) DO NOTHING",
        )
        .await?;
        Ok(())
    }

    /// Writes the wake alone of leads read but not changed (TickWakes::refresh),
    /// in statements of at most MAX_PARAMS / 2 leads.
    async fn refresh_wakes(&mut self, ticks: &TickWakes) -> Result<(), StoreError> {
        let Some(key) = ticks.key else { return Ok(()) };
        for chunk in ticks.refresh.chunks(MAX_PARAMS / 2 - 1) {
            let mut cases = String::new();
            let mut ids = Vec::new();
            for i in 0..chunk.len() {
                let (id, at) = (2 * i + 2, 2 * i + 3);
                cases.push_str(&format!(" WHEN ${id} THEN CAST(${at} AS BIGINT)"));
                ids.push(format!("${id}"));
            }
            let sql = format!(
                "UPDATE leads SET tick_rules = $1, tick_at = CASE id{cases} END WHERE id IN ({})",
                ids.join(",")
            );
            let sql = self.store.sql(&sql).into_owned();
            let mut q = sqlx::query(&sql).bind(key);
            for (id, at) in chunk {
                q = q.bind(id.clone()).bind(*at);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn insert(
        &mut self,
        head: &str,
        cols: usize,
        rows: Vec<Vec<Arg>>,
        tail: &str,
    ) -> Result<(), StoreError> {
        insert_rows(self.store, &mut self.tx, head, cols, rows, tail).await
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

/// `head VALUES (...), (...) tail`, as many rows per statement as fit.
pub(crate) async fn insert_rows(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
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
        let sql = store.sql(&q).into_owned();
        let mut query = sqlx::query(&sql);
        for row in chunk {
            for a in row {
                query = a.bind(query);
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends history rows to their tables (ledger, transitions, emails,
/// assignments, feedback), a statement per table and chunk; `tail` ends
/// each statement.
pub(crate) async fn insert_history(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
    history: HistoryRows,
    tail: &str,
) -> Result<(), StoreError> {
    let HistoryRows {
        ledger,
        transitions,
        emails,
        assignments,
        feedback,
    } = history;
    let lists = [ledger, transitions, emails, assignments, feedback];
    for ((table, cols), rows) in HistoryRows::TABLES.iter().zip(lists) {
        if rows.is_empty() {
            continue;
        }
        let names: Vec<&str> = cols
            .iter()
            .map(|c| c.split_once('.').map_or(*c, |(_, n)| n))
            .collect();
        let head = format!("INSERT INTO {table} ({})", names.join(", "));
        insert_rows(store, conn, &head, cols.len(), rows, tail).await?;
    }
    Ok(())
}

/// Parameters per statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMS: usize = 2000;

use nurture_core::rows::Cell as Arg;

/// Binding a cell to a query.
trait Bind {
    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;
}

impl Bind for Arg {
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

/// The rows of every changed lead in `w`, each checked: the first lead
/// whose rows the database could not hold or give back is the error
/// ([`StoreError::Unstorable`], naming it).
pub fn lead_rows(w: &Writes, now: Timestamp) -> Result<Vec<LeadRows>, StoreError> {
    w.leads
        .iter()
        .map(|(before, lead)| {
            let rows = LeadRows::new(before.as_ref(), lead, millis(&now))?;
            rows.check()?;
            Ok(rows)
        })
        .collect()
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
    pub timeline: Vec<Entry>,
    pub outbox: Vec<Queued>,
    /// Leads set aside, with the cause: their events and due work wait.
    pub quarantine: Vec<(String, String)>,
    /// Leads re-folded for a late event: their stored ledger, transitions
    /// and drip steps are replaced by those in `leads` and `timers_new`.
    pub refolded: Vec<String>,
    /// When a tick may next change each lead (eval::Wake).
    pub ticks: TickWakes,
}

/// When a `schedule` tick may next change the leads a step wrote or read
/// (eval::Wake::column), under the rules `key` (Ruleset::wake_key).
#[derive(Default)]
pub struct TickWakes {
    pub key: Option<i64>,
    /// One per lead of [`Writes::leads`], in its order.
    pub at: Vec<Option<i64>>,
    /// Leads read but not changed whose stored wake was computed under
    /// other rules: the wake alone is written again.
    pub refresh: Vec<(String, Option<i64>)>,
}
