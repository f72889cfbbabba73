//! Reads behind the HTTP API, and erasure.

use super::outbox::OPEN;
use super::{from_millis, millis, Store, StoreError};
use crate::model::{
    time::Timestamp, Assignment, EmailRecord, FeedbackRecord, FeedbackStatus, History, LeadState,
    LedgerEntry, Stage, Transition,
};
use nurture_core::writes::{Entry, TimelineKind};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadSummary {
    pub lead: String,
    pub email: String,
    pub stage: String,
    pub owner: Option<String>,
    pub score: i64,
    pub fit: i64,
    pub consent: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadList {
    pub leads: Vec<LeadSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StageFunnel {
    pub stage: Stage,
    /// Leads in this stage now.
    pub count: i64,
    /// Leads that were ever in this stage or beyond.
    pub reached: i64,
    /// Of those, the share that went on to the next stage (or beyond).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_to_next: Option<f64>,
    /// Median time spent in this stage by leads that left it, in seconds.
    pub median_seconds_in_stage: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Funnel {
    pub leads: i64,
    pub stages: Vec<StageFunnel>,
}

impl Store {
    /// A stored lead with its whole history (read from its tables), as the
    /// API shows it.
    pub async fn lead(&self, id: &str) -> Result<Option<LeadState>, StoreError> {
        let sql = self.sql("SELECT state FROM leads WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let state: String = row.try_get(0)?;
        let (mut lead, old) =
            nurture_core::rows::parse_stored(&state).map_err(|detail| StoreError::Corrupt {
                what: "lead state",
                detail,
            })?;
        lead.history = match old {
            Some(history) => history,
            None => self.history(id).await?,
        };
        Ok(Some(lead))
    }

    /// A lead's history, oldest first, from its tables.
    pub async fn history(&self, id: &str) -> Result<History, StoreError> {
        let corrupt = |what: &'static str, v: &str| StoreError::Corrupt {
            what,
            detail: format!("{v:?}"),
        };
        let rows = self
            .history_rows("SELECT rule, points, event, at, reason FROM ledger", id)
            .await?;
        let mut h = History::default();
        for r in rows {
            h.ledger.push(LedgerEntry {
                rule: r.try_get(0)?,
                points: r.try_get(1)?,
                event: r.try_get(2)?,
                at: from_millis(r.try_get(3)?),
                reason: r.try_get(4)?,
            });
        }
        let rows = self
            .history_rows("SELECT from_stage, to_stage, at FROM transitions", id)
            .await?;
        for r in rows {
            let (from, to): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            h.transitions.push(Transition {
                from: Stage::parse(&from).ok_or_else(|| corrupt("transition", &from))?,
                to: Stage::parse(&to).ok_or_else(|| corrupt("transition", &to))?,
                at: from_millis(r.try_get(2)?),
            });
        }
        let rows = self
            .history_rows("SELECT campaign, step, template, at FROM emails", id)
            .await?;
        for r in rows {
            h.emails.push(EmailRecord {
                campaign: r.try_get(0)?,
                step: r.try_get::<i64, _>(1)?.max(0) as usize,
                template: r.try_get(2)?,
                at: from_millis(r.try_get(3)?),
            });
        }
        let rows = self
            .history_rows("SELECT owner, rule, at FROM assignments", id)
            .await?;
        for r in rows {
            h.assignments.push(Assignment {
                owner: r.try_get(0)?,
                rule: r.try_get(1)?,
                at: from_millis(r.try_get(2)?),
            });
        }
        let rows = self
            .history_rows("SELECT owner, status, at FROM feedback", id)
            .await?;
        for r in rows {
            let status: String = r.try_get(1)?;
            h.feedback.push(FeedbackRecord {
                owner: r.try_get(0)?,
                status: FeedbackStatus::parse(&status)
                    .ok_or_else(|| corrupt("feedback", &status))?,
                at: from_millis(r.try_get(2)?),
            });
        }
        Ok(h)
    }

    /// `select` (a history table's columns) for lead `id`, oldest first.
    async fn history_rows(
        &self,
        select: &str,
        id: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let sql = self
            .sql(&format!("{select} WHERE lead = $1 ORDER BY n"))
            .into_owned();
        Ok(sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Whether a lead is stored, without reading its state.
    pub async fn lead_exists(&self, id: &str) -> Result<bool, StoreError> {
        let sql = self.sql("SELECT 1 FROM leads WHERE id = $1");
        Ok(sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Leads by id, filtered by stage and owner, a page at a time.
    pub async fn list_leads(
        &self,
        stage: Option<&str>,
        owner: Option<&str>,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<LeadList, StoreError> {
        let sql = self.sql(
            "SELECT id, email, stage, owner, score, fit, consent FROM leads \
             WHERE ($1 IS NULL OR stage = $1) AND ($2 IS NULL OR owner = $2) AND id > $3 \
             ORDER BY id LIMIT $4",
        );
        let rows = sqlx::query(&sql)
            .bind(stage.map(str::to_string))
            .bind(owner.map(str::to_string))
            .bind(cursor.unwrap_or("").to_string())
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut leads = Vec::with_capacity(rows.len());
        for r in &rows {
            leads.push(LeadSummary {
                lead: r.try_get(0)?,
                email: r.try_get(1)?,
                stage: r.try_get(2)?,
                owner: r.try_get(3)?,
                score: r.try_get(4)?,
                fit: r.try_get(5)?,
                consent: r.try_get(6)?,
            });
        }
        let next_cursor = if leads.len() as i64 > limit {
            leads.truncate(limit as usize);
            leads.last().map(|l| l.lead.clone())
        } else {
            None
        };
        Ok(LeadList { leads, next_cursor })
    }

    pub async fn funnel(&self) -> Result<Funnel, StoreError> {
        let mut now_in: HashMap<String, i64> = HashMap::new();
        let mut total = 0;
        for r in sqlx::query("SELECT stage, COUNT(*) FROM leads GROUP BY stage")
            .fetch_all(&self.pool)
            .await?
        {
            let n: i64 = r.try_get(1)?;
            total += n;
            now_in.insert(r.try_get(0)?, n);
        }
        // Walk each lead's history: the highest stage it reached, and how long
        // it stayed in each stage it left.
        let mut highest: HashMap<String, Stage> = HashMap::new();
        let mut entered: HashMap<String, (Stage, i64)> = HashMap::new();
        let mut stays: HashMap<Stage, Vec<i64>> = HashMap::new();
        for r in sqlx::query("SELECT id, created_at FROM leads")
            .fetch_all(&self.pool)
            .await?
        {
            let id: String = r.try_get(0)?;
            highest.insert(id.clone(), Stage::Subscriber);
            entered.insert(id, (Stage::Subscriber, r.try_get(1)?));
        }
        let rows = sqlx::query("SELECT lead, to_stage, at FROM transitions ORDER BY lead, n")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let lead: String = r.try_get(0)?;
            let Some(to) = Stage::parse(&r.try_get::<String, _>(1)?) else {
                continue;
            };
            let at: i64 = r.try_get(2)?;
            if let Some((stage, since)) = entered.insert(lead.clone(), (to, at)) {
                stays.entry(stage).or_default().push((at - since) / 1000);
            }
            let h = highest.entry(lead).or_insert(Stage::Subscriber);
            *h = (*h).max(to);
        }
        let reached = |s: Stage| highest.values().filter(|h| **h >= s).count() as i64;
        let stages = Stage::ALL
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let r = reached(s);
                let next = Stage::ALL.get(i + 1).map(|&n| reached(n));
                let median = stays.get_mut(&s).and_then(|v| {
                    v.sort_unstable();
                    v.get(v.len() / 2).copied()
                });
                StageFunnel {
                    stage: s,
                    count: now_in.get(s.as_str()).copied().unwrap_or(0),
                    reached: r,
                    conversion_to_next: next.and_then(|n| (r > 0).then(|| n as f64 / r as f64)),
                    median_seconds_in_stage: median,
                }
            })
            .collect();
        Ok(Funnel {
            leads: total,
            stages,
        })
    }

    /// Erases a lead's personal data: email, attributes, the reasons in its
    /// ledger (a plugin may have put anything there), event payloads, the
    /// bodies of its messages, and free text on its timeline. Scores,
    /// stages and the ledger's points stay, so counts and reports still add
    /// up. Returns false for an unknown lead.
    pub async fn erase_lead(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // What a processing step read of this lead changes: a step under way
        // must not commit what it decided from the data erased here.
        // Every partition's: this may run where the number of partitions
        // is not known (`nurture doctor`), and it is rare.
        sqlx::query("UPDATE partitions SET version = version + 1")
            .execute(&mut *tx)
            .await?;
        let sql = self.sql("SELECT state FROM leads WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let state: String = row.try_get(0)?;
        // An id that is itself personal data (an email address, as Segment's
        // `userId` often is) is replaced everywhere by an opaque one.
        let new_id = match personal_id(id) {
            true => Some(self.opaque_id(id)?),
            false => None,
        };
        // A state that cannot be read (its lead is in quarantine) is blanked
        // whole: erasure must not depend on reading what it erases. The lead
        // stays in quarantine.
        let state = match super::parse_state(&state) {
            // The state holds no history (a version 1 state that still
            // did reads back without it).
            Ok(mut lead) => {
                lead.email.clear();
                lead.attributes.clear();
                if let Some(new) = &new_id {
                    lead.id.clone_from(new);
                }
                serde_json::to_string(&lead).unwrap_or_else(|_| "{}".into())
            }
            Err(_) => "{}".into(),
        };
        let sql = self.sql("UPDATE leads SET email = '', state = $1, erased_at = $2, updated_at = $2, tick_rules = NULL WHERE id = $3");
        sqlx::query(&sql)
            .bind(state)
            .bind(millis(&now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let sql = self.sql("UPDATE ledger SET reason = NULL WHERE lead = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let sql = self.sql("UPDATE events SET payload = $1 WHERE lead = $2");
        sqlx::query(&sql)
            .bind(r#"{"erased":true}"#)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Messages carry the address and what templates made of the lead's
        // data: unsent ones are cancelled, all are blanked, and so are the
        // mail server's answers (which may quote the address).
        let sql = self
            .sql(&format!(
                "UPDATE outbox SET payload = $1, last_error = NULL, state = CASE WHEN state IN {OPEN} THEN 'cancelled' ELSE state END WHERE lead = $2"
            ))
            .into_owned();
        sqlx::query(&sql)
            .bind(r#"{"erased":true}"#)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let sql = self.sql("SELECT seq, detail FROM timeline WHERE lead = $1 ORDER BY seq");
        let rows = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        for r in rows {
            let seq: i64 = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            let scrubbed = match serde_json::from_str::<Value>(&text) {
                Ok(mut detail) => {
                    if !scrub(&mut detail) {
                        continue;
                    }
                    detail.to_string()
                }
                Err(_) => "{}".into(),
            };
            let sql = self.sql("UPDATE timeline SET detail = $1 WHERE seq = $2");
            sqlx::query(&sql)
                .bind(scrubbed)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        let sql = self.sql("UPDATE quarantine SET cause = $1 WHERE lead = $2");
        sqlx::query(&sql)
            .bind("(erased with the lead's personal data)")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let entry = Entry::new(id, now, TimelineKind::Erased, serde_json::json!({}));
        self.insert_timeline(&mut tx, &[entry]).await?;
        if let Some(new) = &new_id {
            self.rekey(&mut tx, id, new).await?;
        }
        tx.commit().await?;
        if self.backend == super::Backend::Sqlite {
            // Old page versions stay in the write-ahead log until a checkpoint.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.writer)
                .await?;
        }
        Ok(true)
    }

    /// Payloads kept for a lead's events (erasure tests and audits).
    pub async fn event_payloads(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql("SELECT payload FROM events WHERE lead = $1 ORDER BY seq");
        let rows = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }
}

/// Whether a lead id is itself personal data that erasure must remove:
/// one that looks like an email address (holds an `@`).
pub fn personal_id(id: &str) -> bool {
    id.contains('@')
}

/// The tables that name a lead in their `lead` column.
const LEAD_TABLES: [&str; 11] = [
    "events",
    "ledger",
    "transitions",
    "enrollments",
    "timeline",
    "due_work",
    "outbox",
    "emails",
    "assignments",
    "feedback",
    "quarantine",
];

impl Store {
    /// An opaque id for an erased lead, `erased-` and random hex, in the
    /// same partition as `id`: its rows stay where their partition's
    /// worker looks for them.
    fn opaque_id(&self, id: &str) -> Result<String, StoreError> {
        use std::io::Read as _;
        let want = self.part_of(id);
        let mut urandom = std::fs::File::open("/dev/urandom").map_err(|e| StoreError::Corrupt {
            what: "random source",
            detail: e.to_string(),
        })?;
        loop {
            let mut buf = [0u8; 12];
            urandom
                .read_exact(&mut buf)
                .map_err(|e| StoreError::Corrupt {
                    what: "random source",
                    detail: e.to_string(),
                })?;
            let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            let candidate = format!("erased-{hex}");
            if self.part_of(&candidate) == want {
                return Ok(candidate);
            }
        }
    }

    /// Moves every row of lead `old` to `new` (within the erasure's
    /// transaction): the id column of each table, and the id inside the
    /// JSON the rows hold (due work names its lead; timeline details may).
    async fn rekey(
        &self,
        conn: &mut sqlx::AnyConnection,
        old: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        // The id as it appears inside a JSON string.
        let quoted = serde_json::to_string(old).unwrap_or_default();
        let escaped = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(old)
            .to_string();
        // Ids the daemon made for a lead's events (`feedback:LEAD:…`,
        // `claim:LEAD:…`) name it too, and the ledger names its events.
        for (table, column) in [
            ("due_work", "kind"),
            ("timeline", "detail"),
            ("events", "id"),
            ("ledger", "event"),
        ] {
            let sql = self
                .sql(&format!(
                    "UPDATE {table} SET {column} = REPLACE({column}, $1, $2) WHERE lead = $3"
                ))
                .into_owned();
            sqlx::query(&sql)
                .bind(escaped.clone())
                .bind(new.to_string())
                .bind(old.to_string())
                .execute(&mut *conn)
                .await?;
        }
        for table in LEAD_TABLES {
            let sql = self
                .sql(&format!("UPDATE {table} SET lead = $1 WHERE lead = $2"))
                .into_owned();
            sqlx::query(&sql)
                .bind(new.to_string())
                .bind(old.to_string())
                .execute(&mut *conn)
                .await?;
        }
        let sql = self.sql("UPDATE leads SET id = $1 WHERE id = $2");
        sqlx::query(&sql)
            .bind(new.to_string())
            .bind(old.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Keys of timeline details that hold free text: a plugin's reason or
/// error, sales' reason, a mail server's answer, a condition's message.
const FREE_TEXT: [&str; 4] = ["reason", "error", "message", "cause"];

/// Blanks (`null`) the free text in a timeline detail, at any depth; true
/// if it changed anything.
fn scrub(v: &mut Value) -> bool {
    match v {
        Value::Object(m) => {
            let mut changed = false;
            for (k, x) in m.iter_mut() {
                if FREE_TEXT.contains(&k.as_str()) && !x.is_null() {
                    *x = Value::Null;
                    changed = true;
                } else {
                    changed |= scrub(x);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, x| scrub(x) | c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn scrub_blanks_free_text_at_any_depth_and_keeps_the_rest() {
        let mut v = json!({"rule": "p", "points": 3, "reason": "ann@x.io",
            "detail": {"reason": "said no", "owner": "anna"}, "list": [{"error": "550 <ann@x.io>"}]});
        assert!(super::scrub(&mut v));
        assert_eq!(
            v,
            json!({"rule": "p", "points": 3, "reason": null,
                "detail": {"reason": null, "owner": "anna"}, "list": [{"error": null}]})
        );
        assert!(!super::scrub(&mut v), "nothing left to blank");
    }
}
