//! Reads behind routing: the claim pool, an owner's overdue leads, whether an
//! event was applied (claims wait for it), and the per-owner report.

use super::{from_millis, Store, StoreError};
use crate::model::{time::Timestamp, Assignment, FeedbackRecord, FeedbackStatus, LeadState, Stage};
use nurture_core::reports::{OwnerFigures, OwnerReport};
use nurture_core::writes::TimelineKind;
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// A lead waiting in the pool: enough to choose, nothing personal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolEntry {
    pub lead: String,
    #[schema(value_type = String)]
    pub stage: Stage,
    pub score: i64,
    pub fit: i64,
    /// Since when it is offered (RFC 3339); absent for leads offered before
    /// this was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_at: Option<String>,
}

/// A lead's state for a report, or `None` (logged) when it cannot be read:
/// such a lead is in quarantine (the processor set it aside), and one bad
/// row must not fail every owner's pool or report.
fn readable(state: &str) -> Option<LeadState> {
    match super::parse_state(state) {
        Ok(lead) => Some(lead),
        Err(e) => {
            tracing::warn!(error = %e, "a lead left out of a routing read");
            None
        }
    }
}

impl Store {
    /// Leads offered to `owner` and not yet claimed, oldest offer first.
    pub async fn pool(&self, owner: &str) -> Result<Vec<PoolEntry>, StoreError> {
        // Unclaimed SQLs are few (claimed ones have an owner), so reading
        // their state beats keeping an index of offers in step with it.
        let rows = sqlx::query(
            "SELECT state FROM leads WHERE stage = 'sql' AND owner IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let Some(lead) = readable(&r.try_get::<String, _>(0)?) else {
                continue;
            };
            if lead.offered_to.iter().any(|o| o == owner) {
                out.push((lead.offered_at, lead));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        Ok(out
            .into_iter()
            .map(|(at, l)| PoolEntry {
                lead: l.id,
                stage: l.stage,
                score: l.score,
                fit: l.fit,
                offered_at: at.as_ref().map(crate::model::time::format),
            })
            .collect())
    }

    /// `owner`'s leads past the SLA with no feedback: still in `sql`, held
    /// since an assignment older than `accept_within`.
    pub async fn overdue_leads(
        &self,
        owner: &str,
        accept_within: chrono::Duration,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        // Since the latest assignment to the owner; answered if any
        // feedback came at or after it.
        let sql = self.sql(
            "SELECT l.id, \
               (SELECT a.at FROM assignments a WHERE a.lead = l.id AND a.owner = $1 ORDER BY a.n DESC LIMIT 1), \
               (SELECT MAX(f.at) FROM feedback f WHERE f.lead = l.id) \
             FROM leads l WHERE l.owner = $1 AND l.stage = 'sql' ORDER BY l.id",
        );
        let rows = sqlx::query(&sql)
            .bind(owner.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let Some(since) = r.try_get::<Option<i64>, _>(1)?.map(from_millis) else {
                continue;
            };
            let answered = r
                .try_get::<Option<i64>, _>(2)?
                .is_some_and(|at| from_millis(at) >= since);
            if !answered && since + accept_within <= now {
                out.push(r.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// Whether the event with this id was applied; `None` if unknown.
    pub async fn event_applied(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let sql = self.sql("SELECT processed_at FROM events WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => None,
            Some(r) => Some(r.try_get::<Option<i64>, _>(0)?.is_some()),
        })
    }

    /// Per-owner figures from every lead ever assigned and the SLA breaches
    /// on the timelines.
    pub async fn owner_report(&self) -> Result<Vec<OwnerFigures>, StoreError> {
        let mut report = OwnerReport::default();
        // Every lead ever assigned, with its assignments and feedback.
        let mut leads: BTreeMap<String, LeadState> = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT l.id, l.stage, l.owner FROM leads l \
             WHERE EXISTS (SELECT 1 FROM assignments a WHERE a.lead = l.id)",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let id: String = r.try_get(0)?;
            let mut lead = LeadState::new(&id, chrono::DateTime::UNIX_EPOCH);
            lead.stage = Stage::parse(&r.try_get::<String, _>(1)?).unwrap_or(Stage::Sql);
            lead.owner = r.try_get(2)?;
            leads.insert(id, lead);
        }
        let rows = sqlx::query("SELECT lead, owner, rule, at FROM assignments ORDER BY lead, n")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            if let Some(lead) = leads.get_mut(&r.try_get::<String, _>(0)?) {
                lead.history.assignments.push(Assignment {
                    owner: r.try_get(1)?,
                    rule: r.try_get(2)?,
                    at: from_millis(r.try_get(3)?),
                });
            }
        }
        let rows = sqlx::query("SELECT lead, owner, status, at FROM feedback ORDER BY lead, n")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let status = FeedbackStatus::parse(&r.try_get::<String, _>(2)?);
            if let (Some(lead), Some(status)) = (leads.get_mut(&r.try_get::<String, _>(0)?), status)
            {
                lead.history.feedback.push(FeedbackRecord {
                    owner: r.try_get(1)?,
                    status,
                    at: from_millis(r.try_get(3)?),
                });
            }
        }
        for lead in leads.values() {
            report.lead(lead);
        }
        // SLA breaches are evaluator notes: read as notes, not matched as text.
        let sql = self.sql("SELECT detail FROM timeline WHERE kind = $1");
        let rows = sqlx::query(&sql)
            .bind(TimelineKind::Note.as_str())
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let detail: String = r.try_get(0)?;
            let v: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
            report.note(&v);
        }
        Ok(report.finish())
    }
}
