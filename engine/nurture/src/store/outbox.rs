//! Delivery of outbox rows of kind `email` and `notification`: claim due rows
//! (`pending`, or `sending` rows whose sender died), then record each
//! outcome. A row is `sending` from its claim until its outcome is committed;
//! that span holds the one window in which a crash leaves the outcome unknown.

use super::{millis, Backend, Store, StoreError};
use crate::model::{time::Timestamp, Event};
use serde_json::Value;
use sqlx::Row;

const MAIL_KINDS: &str = "('email', 'notification')";

/// A claimed row.
#[derive(Debug, Clone)]
pub struct MailRow {
    pub seq: i64,
    pub lead: String,
    pub payload: String,
    /// Tries so far, this one included.
    pub attempts: i64,
    pub created_at: Timestamp,
    /// A previous claim ended without a recorded outcome (a crash): the
    /// message may already have gone out.
    pub uncertain: bool,
    /// The lead's consent now (`None`: the lead is gone or erased).
    pub consent: Option<String>,
}

/// What became of a claimed row.
#[derive(Debug, Clone)]
pub enum MailOutcome {
    Sent { detail: Value },
    Retry { at: Timestamp, error: String },
    Failed { error: String, detail: Value },
    Cancelled { reason: String, detail: Value },
}

impl Store {
    /// Makes every `sending` row due at once: at start-up of the only process
    /// that can use this database (SQLite), any such row was left by a crash.
    pub async fn release_abandoned_mail(&self) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE outbox SET next_at = 0 WHERE kind IN {MAIL_KINDS} AND state = 'sending'"
        );
        Ok(sqlx::query(&sql)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    /// Claims up to `limit` due rows in `seq` order, leasing them until
    /// `lease_until`. Two processes on PostgreSQL never claim the same row.
    pub async fn claim_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<MailRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        // A lease that ran out: its sender died mid-send. This write comes
        // first so SQLite takes its write lock before reading.
        let sql = self.sql(&format!(
            "UPDATE outbox SET state = 'uncertain' WHERE kind IN {MAIL_KINDS} AND state = 'sending' AND next_at <= $1"
        )).into_owned();
        sqlx::query(&sql)
            .bind(millis(&now))
            .execute(&mut *tx)
            .await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF o SKIP LOCKED",
            Backend::Sqlite => "",
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
                "SELECT o.seq, o.lead, o.payload, o.attempts, o.created_at, l.consent, l.erased_at \
                 FROM outbox o LEFT JOIN leads l ON l.id = o.lead \
                 WHERE o.state = '{state}' AND o.kind IN {MAIL_KINDS} AND o.next_at <= $1 \
                 ORDER BY o.seq LIMIT $2{lock}"
            ))
                .into_owned();
            let rows = sqlx::query(&sql)
                .bind(millis(&now))
                .bind(room)
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                let erased: Option<i64> = r.try_get(6)?;
                let consent: Option<String> = r.try_get(5)?;
                out.push(MailRow {
                    seq: r.try_get(0)?,
                    lead: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    attempts: r.try_get::<i64, _>(3)? + 1,
                    created_at: super::from_millis(r.try_get(4)?),
                    uncertain: state == "uncertain",
                    consent: if erased.is_some() { None } else { consent },
                });
            }
        }
        if !out.is_empty() {
            let list = seq_list(out.iter().map(|r| r.seq));
            let sql = self.sql(&format!(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, next_at = $1 WHERE seq IN ({list})"
            )).into_owned();
            sqlx::query(&sql)
                .bind(millis(&lease_until))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records outcomes in one transaction, with a timeline entry for each
    /// row that is done.
    /// `events` (hard bounces) join the event log in the same transaction.
    pub async fn settle_mail(
        &self,
        outcomes: &[(&MailRow, MailOutcome)],
        events: &[Event],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        self.insert_events_in(&mut tx, events, now).await?;
        let sent: Vec<i64> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, MailOutcome::Sent { .. }))
            .map(|(r, _)| r.seq)
            .collect();
        if !sent.is_empty() {
            let sql = self.sql(&format!(
                "UPDATE outbox SET state = 'sent', sent_at = $1, last_error = NULL WHERE seq IN ({})",
                seq_list(sent.into_iter())
            )).into_owned();
            sqlx::query(&sql)
                .bind(millis(&now))
                .execute(&mut *tx)
                .await?;
        }
        let mut timeline: Vec<(&str, &'static str, String)> = Vec::new();
        for (row, outcome) in outcomes {
            let (state, error, next_at) = match outcome {
                MailOutcome::Sent { detail } => {
                    timeline.push((&row.lead, "email_sent", detail.to_string()));
                    continue;
                }
                MailOutcome::Retry { at, error } => ("pending", error, millis(at)),
                MailOutcome::Failed { error, detail } => {
                    timeline.push((&row.lead, "email_failed", detail.to_string()));
                    ("failed", error, 0)
                }
                MailOutcome::Cancelled { reason, detail } => {
                    timeline.push((&row.lead, "email_cancelled", detail.to_string()));
                    ("cancelled", reason, 0)
                }
            };
            let sql = self
                .sql("UPDATE outbox SET state = $1, last_error = $2, next_at = $3 WHERE seq = $4");
            sqlx::query(&sql)
                .bind(state)
                .bind(error.clone())
                .bind(next_at)
                .bind(row.seq)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in timeline.chunks(200) {
            let mut q = String::from("INSERT INTO timeline (lead, at, kind, detail) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    q.push(',');
                }
                let b = i * 4;
                q.push_str(&format!("(${},${},${},${})", b + 1, b + 2, b + 3, b + 4));
            }
            let sql = self.sql(&q);
            let mut query = sqlx::query(&sql);
            for (lead, kind, detail) in chunk {
                query = query
                    .bind(lead.to_string())
                    .bind(millis(&now))
                    .bind(*kind)
                    .bind(detail.clone());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Extends the leases of rows this process is still sending.
    pub async fn renew_mail_lease(&self, seqs: &[i64], until: Timestamp) -> Result<(), StoreError> {
        // On PostgreSQL, rows whose outcome is being recorded right now are
        // locked: skip them (they need no lease any more) rather than wait,
        // which in another order than the recorder's could deadlock.
        let skip = match self.backend {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = self
            .sql(&format!(
                "UPDATE outbox SET next_at = $1 WHERE seq IN (SELECT seq FROM outbox WHERE state = 'sending' AND seq IN ({}){skip})",
                seq_list(seqs.iter().copied())
            ))
            .into_owned();
        sqlx::query(&sql)
            .bind(millis(&until))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Mail rows due now (pending, or leased by a sender that died).
    pub async fn mail_due(&self, now: Timestamp) -> Result<i64, StoreError> {
        let sql = self.sql(&format!(
            "SELECT COUNT(*) FROM outbox WHERE kind IN {MAIL_KINDS} AND state IN ('pending', 'sending', 'uncertain') AND next_at <= $1"
        )).into_owned();
        let row = sqlx::query(&sql)
            .bind(millis(&now))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// `1,2,3`: sequence numbers are integers from the database, safe to inline.
fn seq_list(seqs: impl Iterator<Item = i64>) -> String {
    seqs.map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}
