//! The outbox's delivery state, for every kind of row (emails, notifications,
//! webhooks), and the one lease protocol their senders share:
//! - [`Store::claim`] takes due rows and leases them until a given time:
//!   `state = 'sending'`, `next_at` = the lease's end, `attempts` + 1. Due is
//!   `pending` with `next_at` come, or `sending` with its lease run out (its
//!   sender died: such a row is claimed as [`OutboxRow::uncertain`], since its
//!   message may already have gone out). On PostgreSQL `FOR UPDATE SKIP
//!   LOCKED` keeps two processes off the same row; SQLite has one writer.
//! - [`Store::renew`] extends the leases of rows still being sent.
//! - [`Store::settle`] records outcomes: sent, retry at a time, failed,
//!   cancelled, or released (not tried: due again at once, the attempt not
//!   counted, for a sender that stops). Only a row still held by the claim
//!   that took it is changed: `attempts` is the claim's token, so a sender
//!   whose lease ran out and whose row was claimed again changes nothing.
//! - [`Store::release_abandoned`] makes rows left `sending` due at once, at
//!   start-up of the only process that can use the database (SQLite).
//!
//! A row is `sending` from its claim until its outcome is committed; that
//! span holds the one window in which a crash leaves the outcome unknown.

use super::{from_millis, millis, Backend, Store, StoreError};
use crate::model::{time::Timestamp, Event};
use nurture_core::writes::{Entry, TimelineKind};
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;

pub use nurture_core::writes::OutboxKind;

/// A claimed row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub kind: OutboxKind,
    pub lead: String,
    pub payload: String,
    /// Tries so far, this one included; also the claim's token.
    pub attempts: i64,
    pub created_at: Timestamp,
    /// What the receiver de-duplicates on, for kinds the claim keys.
    pub msg_key: Option<String>,
    /// A previous claim ended without a recorded outcome (a crash): the
    /// message may already have gone out.
    pub uncertain: bool,
    /// The lead's consent now (`None`: the lead is gone or erased).
    pub consent: Option<String>,
}

/// What became of a claimed row.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent,
    /// A transient failure: due again at `at`.
    Retry {
        at: Timestamp,
        error: String,
    },
    Failed {
        error: String,
    },
    /// Not sent, and never will be (e.g. consent withdrawn).
    Cancelled {
        reason: String,
    },
    /// Not tried: due again at once, this attempt not counted, and still
    /// uncertain if it was.
    Released,
}

/// A timeline entry on the row's lead, written with its outcome.
#[derive(Debug, Clone)]
pub struct Note {
    pub kind: TimelineKind,
    pub detail: Value,
}

/// One row's outcome, with what to say on its lead's timeline.
#[derive(Debug, Clone)]
pub struct Settle<'a> {
    pub row: &'a OutboxRow,
    pub outcome: Outcome,
    pub note: Option<Note>,
}

/// The states of a row not yet delivered or given up.
/// The marker row of a held outbox (`serve --hold-outbox`, `nurture
/// outbox hold`): its value is when the hold was set (RFC 3339).
const HELD: &str = "SELECT value FROM daemon_settings WHERE name = 'outbox_hold'";

pub(crate) const OPEN: &str = "('pending', 'sending', 'uncertain')";

/// `('email','notification')`: kind names are constants, safe to inline.
fn kind_list(kinds: &[OutboxKind]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("'{k}'")).collect();
    format!("({})", names.join(","))
}

/// The rows among `seq IN (...)` still held by the claims given as
/// `(seq, attempts)`. Integers from the database, safe to inline; the
/// `seq IN` lets both databases find the rows by key.
fn held(claims: &[(i64, i64)]) -> String {
    let seqs = seq_list(claims.iter().map(|c| c.0));
    let pairs: Vec<String> = claims.iter().map(|(s, a)| format!("({s},{a})")).collect();
    format!(
        "seq IN ({seqs}) AND (seq, attempts) IN (VALUES {})",
        pairs.join(",")
    )
}

/// `1,2,3`: sequence numbers are integers from the database, safe to inline.
fn seq_list(seqs: impl Iterator<Item = i64>) -> String {
    seqs.map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

impl Store {
    /// Makes every `sending` row of `kinds` due at once: at start-up of the
    /// only process that can use this database (SQLite), any such row was
    /// left by a process that stopped mid-send. They are claimed as uncertain.
    pub async fn release_abandoned(&self, kinds: &[OutboxKind]) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE outbox SET next_at = 0 WHERE kind IN {} AND state = 'sending'",
            kind_list(kinds)
        );
        Ok(sqlx::query(&sql)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    /// Claims up to `limit` due rows of `kinds` in `seq` order (those whose
    /// outcome is unknown first), leasing them until `lease_until`.
    pub async fn claim(
        &self,
        kinds: &[OutboxKind],
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let in_kinds = kind_list(kinds);
        let mut tx = self.begin_write().await?;
        // A lease that ran out: its sender died mid-send. This write comes
        // first so SQLite takes its write lock before reading.
        let sql = self
            .sql(&format!(
                "UPDATE outbox SET state = 'uncertain' WHERE kind IN {in_kinds} AND state = 'sending' AND next_at <= $1"
            ))
            .into_owned();
        sqlx::query(&sql)
            .bind(millis(&now))
            .execute(&mut *tx)
            .await?;
        // Held (a restore): nothing is claimed until an operator releases
        // or cancels. Read in the claim's transaction, so a hold committed
        // before it is never passed.
        if sqlx::query(HELD).fetch_optional(&mut *tx).await?.is_some() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF o SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let ordered: Vec<OutboxKind> = kinds
            .iter()
            .copied()
            .filter(|k| k.in_lead_order())
            .collect();
        let in_order = if ordered.is_empty() {
            String::new()
        } else {
            format!(
                " AND NOT (o.kind IN {} AND EXISTS (SELECT 1 FROM outbox e WHERE e.lead = o.lead \
                 AND e.kind = o.kind AND e.seq < o.seq AND e.state IN {OPEN}))",
                kind_list(&ordered)
            )
        };
        // Uncertain rows first (rare), then pending ones; one state per query
        // so each walks its index in `seq` order and stops at the limit.
        let mut out = Vec::new();
        for state in ["uncertain", "pending"] {
            let room = limit - out.len() as i64;
            if room <= 0 {
                break;
            }
            let sql = self
                .sql(&format!(
                    "SELECT o.seq, o.kind, o.lead, o.payload, o.attempts, o.created_at, o.msg_key, l.consent, l.erased_at \
                     FROM outbox o LEFT JOIN leads l ON l.id = o.lead \
                     WHERE o.state = '{state}' AND o.kind IN {in_kinds} AND o.next_at <= $1{in_order} \
                     ORDER BY o.seq LIMIT $2{lock}"
                ))
                .into_owned();
            let rows = sqlx::query(&sql)
                .bind(millis(&now))
                .bind(room)
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                let kind: String = r.try_get(1)?;
                let kind = OutboxKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                    what: "outbox kind",
                    detail: kind,
                })?;
                let erased: Option<i64> = r.try_get(8)?;
                let consent: Option<String> = r.try_get(7)?;
                out.push(OutboxRow {
                    seq: r.try_get(0)?,
                    kind,
                    lead: r.try_get(2)?,
                    payload: r.try_get(3)?,
                    attempts: r.try_get::<i64, _>(4)? + 1,
                    created_at: from_millis(r.try_get(5)?),
                    msg_key: r.try_get(6)?,
                    uncertain: state == "uncertain",
                    consent: if erased.is_some() { None } else { consent },
                });
            }
        }
        if !out.is_empty() {
            let keyed: Vec<OutboxKind> = kinds
                .iter()
                .copied()
                .filter(|k| k.keyed_by_claim())
                .collect();
            let key = if keyed.is_empty() {
                String::new()
            } else {
                format!(
                    ", msg_key = CASE WHEN kind IN {} THEN COALESCE(msg_key, 'msg_' || CAST(created_at AS TEXT) || '_' || CAST(seq AS TEXT)) ELSE msg_key END",
                    kind_list(&keyed)
                )
            };
            let list = seq_list(out.iter().map(|r| r.seq));
            let sql = self
                .sql(&format!(
                    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, next_at = $1{key} \
                     WHERE seq IN ({list}) RETURNING seq, msg_key"
                ))
                .into_owned();
            let keys = sqlx::query(&sql)
                .bind(millis(&lease_until))
                .fetch_all(&mut *tx)
                .await?;
            let mut keys: HashMap<i64, Option<String>> = keys
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
            for row in &mut out {
                row.msg_key = keys.remove(&row.seq).flatten();
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records outcomes in one transaction, with each one's timeline note.
    /// `events` (hard bounces) join the event log in the same transaction.
    /// A row no longer held by its claim is left as it is, without a note.
    pub async fn settle(
        &self,
        outcomes: &[Settle<'_>],
        events: &[Event],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        self.insert_events_in(&mut tx, events, now).await?;
        let sent: Vec<(i64, i64)> = outcomes
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Sent))
            .map(|s| (s.row.seq, s.row.attempts))
            .collect();
        // Rows whose outcome was recorded (still held by their claim).
        let mut recorded = std::collections::HashSet::new();
        for chunk in sent.chunks(500) {
            let sql = self
                .sql(&format!(
                    "UPDATE outbox SET state = 'sent', sent_at = $1, last_error = NULL WHERE {} RETURNING seq",
                    held(chunk)
                ))
                .into_owned();
            for r in sqlx::query(&sql)
                .bind(millis(&now))
                .fetch_all(&mut *tx)
                .await?
            {
                recorded.insert(r.try_get::<i64, _>(0)?);
            }
        }
        for s in outcomes {
            let (state, error, next_at) = match &s.outcome {
                Outcome::Sent => continue,
                Outcome::Retry { at, error } => ("pending", Some(error), millis(at)),
                Outcome::Failed { error } => ("failed", Some(error), 0),
                Outcome::Cancelled { reason } => ("cancelled", Some(reason), 0),
                Outcome::Released => {
                    let back = if s.row.uncertain {
                        "uncertain"
                    } else {
                        "pending"
                    };
                    (back, None, 0)
                }
            };
            let sql = if matches!(s.outcome, Outcome::Released) {
                self.sql("UPDATE outbox SET state = $1, attempts = attempts - 1, next_at = $2 WHERE seq = $3 AND attempts = $4")
            } else {
                self.sql("UPDATE outbox SET state = $1, last_error = $2, next_at = $3 WHERE seq = $4 AND attempts = $5")
            };
            let mut query = sqlx::query(&sql).bind(state);
            if let Some(error) = error {
                query = query.bind(error.clone());
            }
            let done = query
                .bind(next_at)
                .bind(s.row.seq)
                .bind(s.row.attempts)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                recorded.insert(s.row.seq);
            }
        }
        let timeline: Vec<Entry> = outcomes
            .iter()
            .filter(|s| recorded.contains(&s.row.seq))
            .filter_map(|s| {
                let note = s.note.as_ref()?;
                Some(Entry::new(&s.row.lead, now, note.kind, note.detail.clone()))
            })
            .collect();
        self.insert_timeline(&mut tx, &timeline).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Extends the leases of rows this process is still sending, given as
    /// `(seq, attempts)` of their claims.
    pub async fn renew(&self, claims: &[(i64, i64)], until: Timestamp) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        // On PostgreSQL, rows whose outcome is being recorded right now are
        // locked: skip them (they need no lease any more) rather than wait,
        // which in another order than the recorder's could deadlock.
        let skip = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        for chunk in claims.chunks(500) {
            let sql = self
                .sql(&format!(
                    "UPDATE outbox SET next_at = $1 WHERE seq IN (SELECT seq FROM outbox WHERE state = 'sending' AND {}{skip})",
                    held(chunk)
                ))
                .into_owned();
            sqlx::query(&sql)
                .bind(millis(&until))
                .execute(&self.writer)
                .await?;
        }
        Ok(())
    }

    /// Outbox rows (emails, notices, webhooks) not yet delivered or given
    /// up: 0 means nothing decided is still to go out.
    /// Exact up to EXACT_COUNT, an upper bound from the ids above (as
    /// Store::queue_depth: `/healthz` reads it).
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        // The lowest open id, one index endpoint per state.
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE state IN {OPEN} LIMIT {over}) p), \
                    (SELECT MIN(seq) FROM outbox WHERE state = 'pending'), \
                    (SELECT MIN(seq) FROM outbox WHERE state = 'sending'), \
                    (SELECT MIN(seq) FROM outbox WHERE state = 'uncertain'), \
                    (SELECT MAX(seq) FROM outbox)",
            over = super::EXACT_COUNT + 1
        );
        let row = sqlx::query(&sql).fetch_one(&self.pool).await?;
        let lowest = [1, 2, 3]
            .into_iter()
            .map(|i| row.try_get::<Option<i64>, _>(i))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .min();
        Ok(super::depth(row.try_get(0)?, lowest, row.try_get(4)?))
    }

    /// Rows of `kinds` due now (pending, or leased by a sender that died).
    pub async fn outbox_due(
        &self,
        kinds: &[OutboxKind],
        now: Timestamp,
    ) -> Result<i64, StoreError> {
        let sql = self
            .sql(&format!(
                "SELECT COUNT(*) FROM outbox WHERE kind IN {} AND state IN {OPEN} AND next_at <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM daemon_settings WHERE name = 'outbox_hold')",
                kind_list(kinds)
            ))
            .into_owned();
        let row = sqlx::query(&sql)
            .bind(millis(&now))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The dependency is back (a send or a probe worked): rows of `kinds`
    /// waiting on a retry after a transient failure are due now, not when
    /// their backoff says (up to 10 minutes for mail). How many.
    pub async fn retry_now(&self, kinds: &[OutboxKind], now: Timestamp) -> Result<u64, StoreError> {
        let sql = self
            .sql(&format!(
                "UPDATE outbox SET next_at = $1 WHERE kind IN {} AND state = 'pending' \
                 AND last_error IS NOT NULL AND next_at > $1",
                kind_list(kinds)
            ))
            .into_owned();
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(&sql)
            .bind(millis(&now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

/// What `nurture outbox release` / `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unheld {
    /// Whether the outbox was held.
    pub was_held: bool,
    /// Rows released to be sent, or cancelled.
    pub rows: u64,
}

impl Store {
    /// When the outbox was held, if it is: nothing pending is sent until
    /// it is released or cancelled.
    pub async fn outbox_hold(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(HELD).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Holds the outbox (idempotent; an existing hold keeps its time);
    /// returns whether it was already held.
    pub async fn hold_outbox(&self, now: Timestamp) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = self.sql(
            "INSERT INTO daemon_settings (name, value) VALUES ('outbox_hold', $1) ON CONFLICT (name) DO NOTHING",
        );
        let added = sqlx::query(&sql)
            .bind(crate::model::time::format(&now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(added == 0)
    }

    /// Lifts the hold: what waits is sent from the senders' next poll.
    pub async fn release_outbox(&self) -> Result<Unheld, StoreError> {
        let mut tx = self.begin_write().await?;
        let was = sqlx::query("DELETE FROM daemon_settings WHERE name = 'outbox_hold'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let rows: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM outbox WHERE state IN {OPEN}"
        ))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(Unheld {
            was_held: was > 0,
            rows: u64::try_from(rows).unwrap_or(0),
        })
    }

    /// Cancels every message still to go (emails, notices, webhooks: each
    /// gets a `cancelled` timeline entry) and lifts the hold, in one
    /// transaction: what was pending when a backup was taken is never sent.
    pub async fn cancel_outbox(&self, now: Timestamp) -> Result<Unheld, StoreError> {
        let mut tx = self.begin_write().await?;
        let reason = "cancelled by an operator (nurture outbox cancel)";
        let sql = self
            .sql(&format!(
                "UPDATE outbox SET state = 'cancelled', last_error = $1 WHERE state IN {OPEN} RETURNING seq, lead, kind, payload"
            ))
            .into_owned();
        let rows = sqlx::query(&sql).bind(reason).fetch_all(&mut *tx).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get(2)?;
            let payload: String = r.try_get(3)?;
            let payload: Value = serde_json::from_str(&payload).unwrap_or_default();
            let mut detail = serde_json::json!({"outbox": r.try_get::<i64, _>(0)?, "kind": kind, "reason": reason});
            if let Some(id) = payload.get("message_id") {
                detail["message_id"] = id.clone();
            }
            entries.push(Entry::new(
                r.try_get::<String, _>(1)?,
                now,
                TimelineKind::EmailCancelled,
                detail,
            ));
        }
        self.insert_timeline(&mut tx, &entries).await?;
        let was = sqlx::query("DELETE FROM daemon_settings WHERE name = 'outbox_hold'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Unheld {
            was_held: was > 0,
            rows: rows.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The lease protocol on SQLite, and on PostgreSQL when
    //! NURTURE_TEST_DATABASE_URL names a server (required when `CI=true`).
    use super::*;
    use chrono::Duration;

    fn t0() -> Timestamp {
        crate::model::time::parse("2026-01-01T00:00:00Z").unwrap()
    }

    /// A fresh, migrated store per backend; `dir` holds the SQLite file.
    async fn stores(name: &str, dir: &std::path::Path) -> Vec<String> {
        let mut urls = vec![format!("sqlite://{}", dir.join("outbox.db").display())];
        match std::env::var("NURTURE_TEST_DATABASE_URL") {
            Ok(base) => {
                let db = format!("nurture_unit_{name}");
                let admin = Store::connect(&base).await.unwrap();
                for q in [
                    format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                    format!("CREATE DATABASE {db}"),
                ] {
                    sqlx::query(&q).execute(&admin.writer).await.unwrap();
                }
                admin.writer.close().await;
                let (head, _) = base.rsplit_once('/').unwrap();
                urls.push(format!("{head}/{db}"));
            }
            Err(_) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "{name}: CI=true and NURTURE_TEST_DATABASE_URL unset");
                eprintln!("{name} on PostgreSQL: skipped (NURTURE_TEST_DATABASE_URL unset)");
            }
        }
        for url in &urls {
            Store::connect(url).await.unwrap().migrate().await.unwrap();
        }
        urls
    }

    async fn add(store: &Store, lead: &str, kind: OutboxKind) -> i64 {
        let sql = store.sql(
            "INSERT INTO outbox (lead, kind, payload, created_at) VALUES ($1, $2, '{}', $3) RETURNING seq",
        );
        let row = sqlx::query(&sql)
            .bind(lead.to_string())
            .bind(kind.as_str())
            .bind(millis(&t0()))
            .fetch_one(&store.writer)
            .await
            .unwrap();
        row.try_get(0).unwrap()
    }

    /// `(state, attempts)` of a row.
    async fn state(store: &Store, seq: i64) -> (String, i64) {
        let sql = store.sql("SELECT state, attempts FROM outbox WHERE seq = $1");
        let r = sqlx::query(&sql)
            .bind(seq)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        (r.try_get(0).unwrap(), r.try_get(1).unwrap())
    }

    async fn timeline_kinds(store: &Store) -> Vec<String> {
        sqlx::query("SELECT kind FROM timeline ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect()
    }

    fn seqs(rows: &[OutboxRow]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    async fn settle_one(store: &Store, row: &OutboxRow, outcome: Outcome, note: Option<Note>) {
        let s = Settle { row, outcome, note };
        store.settle(&[s], &[], t0()).await.unwrap();
    }

    #[tokio::test]
    async fn a_claim_takes_due_rows_of_its_kinds_once_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        for url in stores("outbox_claim", dir.path()).await {
            let store = Store::connect(&url).await.unwrap();
            let email = add(&store, "a", OutboxKind::Email).await;
            let hook = add(&store, "a", OutboxKind::Webhook).await;
            let notice = add(&store, "b", OutboxKind::Notification).await;
            let (now, lease) = (t0(), t0() + Duration::seconds(30));

            let mail = store.claim(OutboxKind::MAIL, now, lease, 10).await.unwrap();
            assert_eq!(seqs(&mail), [email, notice], "{url}");
            assert_eq!(mail[1].kind, OutboxKind::Notification);
            assert!(mail.iter().all(|r| r.attempts == 1 && !r.uncertain));
            assert!(
                mail.iter().all(|r| r.msg_key.is_none()),
                "emails keep their Message-ID"
            );
            assert_eq!(state(&store, email).await, ("sending".into(), 1));
            let again = store.claim(OutboxKind::MAIL, now, lease, 10).await.unwrap();
            assert!(again.is_empty(), "{url}: leased rows are not claimed twice");

            let hooks = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            assert_eq!(seqs(&hooks), [hook]);
            let key = format!("msg_{}_{hook}", millis(&t0()));
            assert_eq!(hooks[0].msg_key.as_deref(), Some(key.as_str()));

            let sent = Note {
                kind: TimelineKind::EmailSent,
                detail: json_detail(),
            };
            settle_one(&store, &mail[0], Outcome::Sent, Some(sent)).await;
            let retry = Outcome::Retry {
                at: now + Duration::seconds(5),
                error: "busy".into(),
            };
            settle_one(&store, &mail[1], retry, None).await;
            assert_eq!(state(&store, email).await, ("sent".into(), 1));
            assert_eq!(state(&store, notice).await, ("pending".into(), 1));
            assert_eq!(timeline_kinds(&store).await, ["email_sent"]);
            assert_eq!(store.outbox_due(OutboxKind::MAIL, now).await.unwrap(), 0);
            let later = now + Duration::seconds(5);
            assert_eq!(store.outbox_due(OutboxKind::MAIL, later).await.unwrap(), 1);
            let retried = store
                .claim(OutboxKind::MAIL, later, later, 10)
                .await
                .unwrap();
            assert_eq!(seqs(&retried), [notice]);
            assert_eq!(retried[0].attempts, 2);
        }
    }

    fn json_detail() -> Value {
        serde_json::json!({"message_id": "m1"})
    }

    #[tokio::test]
    async fn a_lease_that_ran_out_is_claimed_again_as_uncertain_and_fences_the_first_claim() {
        let dir = tempfile::tempdir().unwrap();
        for url in stores("outbox_expiry", dir.path()).await {
            let store = Store::connect(&url).await.unwrap();
            let seq = add(&store, "a", OutboxKind::Email).await;
            let now = t0();
            let first = store
                .claim(OutboxKind::MAIL, now, now + Duration::seconds(30), 10)
                .await
                .unwrap();
            // Renewed: still held at 40 s.
            store
                .renew(&[(seq, 1)], now + Duration::seconds(60))
                .await
                .unwrap();
            let at40 = now + Duration::seconds(40);
            assert!(store
                .claim(OutboxKind::MAIL, at40, at40, 10)
                .await
                .unwrap()
                .is_empty());
            // Not renewed again: at 61 s another claimer takes it.
            let at61 = now + Duration::seconds(61);
            let second = store
                .claim(OutboxKind::MAIL, at61, at61 + Duration::seconds(30), 10)
                .await
                .unwrap();
            assert_eq!(seqs(&second), [seq], "{url}");
            assert!(second[0].uncertain && second[0].attempts == 2);

            // The first claimer's outcome comes too late: nothing changes.
            let note = Note {
                kind: TimelineKind::EmailSent,
                detail: json_detail(),
            };
            settle_one(&store, &first[0], Outcome::Sent, Some(note.clone())).await;
            store
                .renew(&[(seq, 1)], at61 + Duration::days(1))
                .await
                .unwrap();
            assert_eq!(state(&store, seq).await, ("sending".into(), 2));
            assert!(timeline_kinds(&store).await.is_empty());
            settle_one(&store, &second[0], Outcome::Sent, Some(note)).await;
            assert_eq!(state(&store, seq).await, ("sent".into(), 2));
            assert_eq!(timeline_kinds(&store).await, ["email_sent"]);
        }
    }

    #[tokio::test]
    async fn released_and_abandoned_rows_are_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for url in stores("outbox_release", dir.path()).await {
            let store = Store::connect(&url).await.unwrap();
            let seq = add(&store, "a", OutboxKind::Webhook).await;
            let now = t0();
            let lease = now + Duration::seconds(60);
            let rows = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            settle_one(&store, &rows[0], Outcome::Released, None).await;
            assert_eq!(state(&store, seq).await, ("pending".into(), 0), "{url}");
            let rows = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            assert_eq!(rows[0].attempts, 1);
            assert!(!rows[0].uncertain);

            // Left `sending` by a process that stopped: due at its restart,
            // and uncertain, also after a release.
            assert_eq!(store.release_abandoned(OutboxKind::MAIL).await.unwrap(), 0);
            assert_eq!(
                store.release_abandoned(OutboxKind::WEBHOOKS).await.unwrap(),
                1
            );
            let rows = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            assert!(rows[0].uncertain && rows[0].attempts == 2);
            settle_one(&store, &rows[0], Outcome::Released, None).await;
            assert_eq!(state(&store, seq).await, ("uncertain".into(), 1));
            let rows = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            assert!(rows[0].uncertain && rows[0].attempts == 2);
        }
    }

    #[tokio::test]
    async fn a_leads_webhooks_are_claimed_one_at_a_time_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for url in stores("outbox_order", dir.path()).await {
            let store = Store::connect(&url).await.unwrap();
            let a1 = add(&store, "a", OutboxKind::Webhook).await;
            let a2 = add(&store, "a", OutboxKind::Webhook).await;
            let b1 = add(&store, "b", OutboxKind::Webhook).await;
            let e1 = add(&store, "a", OutboxKind::Email).await;
            let e2 = add(&store, "a", OutboxKind::Email).await;
            let now = t0();
            let lease = now + Duration::seconds(60);
            let mail = store.claim(OutboxKind::MAIL, now, lease, 10).await.unwrap();
            assert_eq!(seqs(&mail), [e1, e2], "{url}: emails are not held in order");
            let rows = store
                .claim(OutboxKind::WEBHOOKS, now, lease, 10)
                .await
                .unwrap();
            assert_eq!(seqs(&rows), [a1, b1], "{url}");
            let retry = Outcome::Retry {
                at: now + Duration::seconds(1),
                error: "503".into(),
            };
            settle_one(&store, &rows[0], retry, None).await;
            let later = now + Duration::seconds(2);
            let rows = store
                .claim(
                    OutboxKind::WEBHOOKS,
                    later,
                    later + Duration::seconds(60),
                    10,
                )
                .await
                .unwrap();
            assert_eq!(
                seqs(&rows),
                [a1],
                "a retrying webhook holds its lead's later ones"
            );
            settle_one(
                &store,
                &rows[0],
                Outcome::Failed {
                    error: "gone".into(),
                },
                None,
            )
            .await;
            let rows = store
                .claim(
                    OutboxKind::WEBHOOKS,
                    later,
                    later + Duration::seconds(60),
                    10,
                )
                .await
                .unwrap();
            assert_eq!(seqs(&rows), [a2], "a failed one no longer does");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_claimers_never_claim_the_same_row() {
        let dir = tempfile::tempdir().unwrap();
        for url in stores("outbox_two", dir.path()).await {
            let store = Store::connect(&url).await.unwrap();
            let mut all = Vec::new();
            for i in 0..300 {
                let kind = [OutboxKind::Email, OutboxKind::Notification][i % 2];
                all.push(add(&store, &format!("l{}", i % 7), kind).await);
            }
            // Two processes: two stores of their own on one database.
            let mut claimers = Vec::new();
            for _ in 0..2 {
                let other = Store::connect(&url).await.unwrap();
                claimers.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let now = t0();
                        let rows = other
                            .claim(OutboxKind::MAIL, now, now + Duration::seconds(30), 7)
                            .await
                            .unwrap();
                        if rows.is_empty() {
                            return got;
                        }
                        got.extend(seqs(&rows));
                        tokio::task::yield_now().await;
                    }
                }));
            }
            let mut claimed = Vec::new();
            let mut each = Vec::new();
            for c in claimers {
                let got = c.await.unwrap();
                each.push(got.len());
                claimed.extend(got);
            }
            claimed.sort_unstable();
            assert_eq!(
                claimed, all,
                "{url}: every row claimed exactly once ({each:?})"
            );
        }
    }
}
