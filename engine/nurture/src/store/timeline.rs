//! The timeline: its one insert path, and its read, composed.
//!
//! Every entry the timeline table holds, whoever makes it (a step's
//! decisions, the outbox's outcomes, a release from quarantine, an
//! erasure), goes in through [`Store::insert_timeline`], typed ([`Entry`],
//! [`TimelineKind`]). What other tables already hold is not copied into it:
//! a lead's timeline is composed when read from the events applied, the
//! ledger, the stage changes and the assignments, merged in place with the
//! table's own entries (notes, messages, webhooks and their outcomes).

use super::{from_millis, millis, Store, StoreError};
use crate::model::time::Timestamp;
use nurture_core::writes::{Entry, TimelineKind};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Rows per INSERT: 4 parameters each, well under both backends' limits.
const ROWS: usize = 500;

/// An entry of a lead's timeline, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Where the entry stands: pass it as `after` for the entries after it.
    pub cursor: String,
    #[serde(with = "crate::model::time::serde_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub detail: Value,
}

/// Where an entry stands in its lead's timeline: by time; at the same time,
/// an event before the points it earned, points before stage changes,
/// stage changes before assignments, and those before the timeline table's
/// own entries, which is the order a step makes them in; then by its order
/// in its table. Shown as `AT.SOURCE.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    at: i64,
    source: i64,
    n: i64,
}

impl Place {
    /// Before every entry.
    pub const START: Place = Place {
        at: i64::MIN,
        source: 0,
        n: i64::MIN,
    };

    /// A cursor as [`TimelineEntry::cursor`] shows it.
    pub fn parse(cursor: &str) -> Option<Place> {
        let mut parts = cursor.split('.').map(|p| p.parse::<i64>().ok());
        let place = Place {
            at: parts.next()??,
            source: parts.next()??,
            n: parts.next()??,
        };
        parts.next().is_none().then_some(place)
    }

    fn cursor(&self) -> String {
        format!("{}.{}.{}", self.at, self.source, self.n)
    }
}

/// The sources of a timeline, in [`Place`] order: the kind of their
/// entries (`None`: the timeline table, whose rows name theirs), the query
/// (its first two columns are `at` and the order within the table), and how
/// a row's other columns become the entry's detail.
type Detail = fn(&AnyRow) -> Result<Value, sqlx::Error>;
const SOURCES: [(Option<TimelineKind>, &str, &str, Detail); 5] = [
    (
        Some(TimelineKind::Event),
        "SELECT at, seq, id, type, processed_at FROM events WHERE processed_at IS NOT NULL AND",
        "seq",
        |r| {
            let applied = from_millis(r.try_get(4)?);
            Ok(json!({
                "id": r.try_get::<String, _>(2)?,
                "type": r.try_get::<String, _>(3)?,
                "applied_at": crate::model::time::format(&applied),
            }))
        },
    ),
    (
        Some(TimelineKind::Scored),
        "SELECT at, n, rule, points, event, reason FROM ledger WHERE",
        "n",
        |r| {
            Ok(json!({
                "rule": r.try_get::<String, _>(2)?,
                "points": r.try_get::<i64, _>(3)?,
                "event": r.try_get::<Option<String>, _>(4)?,
                "reason": r.try_get::<Option<String>, _>(5)?,
            }))
        },
    ),
    (
        Some(TimelineKind::StageChanged),
        "SELECT at, n, from_stage, to_stage FROM transitions WHERE",
        "n",
        |r| Ok(json!({"from": r.try_get::<String, _>(2)?, "to": r.try_get::<String, _>(3)?})),
    ),
    (
        Some(TimelineKind::Assigned),
        "SELECT at, n, owner, rule FROM assignments WHERE",
        "n",
        |r| Ok(json!({"owner": r.try_get::<String, _>(2)?, "rule": r.try_get::<String, _>(3)?})),
    ),
    (
        None,
        "SELECT at, seq, detail, kind FROM timeline WHERE",
        "seq",
        |r| {
            let detail: String = r.try_get(2)?;
            Ok(serde_json::from_str(&detail).unwrap_or(Value::Null))
        },
    ),
];

impl Store {
    /// Inserts `entries` on `conn` (within the caller's write transaction).
    pub(crate) async fn insert_timeline(
        &self,
        conn: &mut sqlx::AnyConnection,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        for chunk in entries.chunks(ROWS) {
            let mut q = String::from("INSERT INTO timeline (lead, at, kind, detail) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    q.push(',');
                }
                let b = i * 4;
                q.push_str(&format!("(${},${},${},${})", b + 1, b + 2, b + 3, b + 4));
            }
            let sql = self.sql(&q).into_owned();
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.lead.clone())
                    .bind(millis(&e.at))
                    .bind(e.kind.as_str())
                    .bind(e.detail.to_string());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Up to `limit` entries of lead `id`'s timeline after `after`, in order.
    pub async fn timeline(
        &self,
        id: &str,
        after: Place,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut entries = Vec::new();
        for (source, (kind, select, order, detail)) in SOURCES.iter().enumerate() {
            let source = source as i64;
            // After the cursor: later, or as late and further on in the
            // order; the source is a constant of each query.
            let sql = self
                .sql(&format!(
                    "{select} lead = $1 AND (at > $2 OR (at = $2 AND ({source} > $3 OR ({source} = $3 AND {order} > $4)))) \
                     ORDER BY at, {order} LIMIT $5"
                ))
                .into_owned();
            let rows = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(after.at)
                .bind(after.source)
                .bind(after.n)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            for r in rows {
                let place = Place {
                    at: r.try_get(0)?,
                    source,
                    n: r.try_get(1)?,
                };
                let kind = match kind {
                    Some(k) => *k,
                    // A kind this version does not know is left out.
                    None => match TimelineKind::parse(&r.try_get::<String, _>(3)?) {
                        Some(k) => k,
                        None => continue,
                    },
                };
                entries.push((place, kind, detail(&r)?));
            }
        }
        entries.sort_by_key(|(place, _, _)| *place);
        entries.truncate(limit.max(0) as usize);
        Ok(entries
            .into_iter()
            .map(|(place, kind, detail)| TimelineEntry {
                cursor: place.cursor(),
                at: from_millis(place.at),
                kind: kind.as_str(),
                detail,
            })
            .collect())
    }
}
