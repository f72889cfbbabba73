//! The stored history read whole, for `nurture replay` and its `--export`:
//! every event in the order it was stored, page by page (each page a short
//! read of its own, so a running daemon is never held up), without the
//! leads erased (their payloads are scrubbed: they cannot be replayed, and
//! half of a lead's history would be worse than none).

use super::{Store, StoreError};
use crate::model::{time::Timestamp, Event};
use sqlx::Row;
use std::collections::{BTreeSet, HashSet};

/// Events read per query.
const PAGE: i64 = 20_000;

/// A stored history, as replay reads it.
pub struct History {
    /// In the order they were stored, as they happened (not as imported).
    pub events: Vec<Event>,
    /// Leads they are of.
    pub leads: usize,
    /// Leads left out: erased, or with an event that no longer reads back.
    pub erased: usize,
    pub unreadable: usize,
}

/// One stored event: its place in the log, its lead, its stored form.
pub struct StoredEvent {
    pub seq: i64,
    pub lead: String,
    pub payload: String,
}

impl Store {
    /// Up to `limit` stored events after `after` (a `seq`), in order.
    pub async fn stored_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql =
            self.sql("SELECT seq, lead, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    lead: r.try_get(1)?,
                    payload: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The leads whose personal data was erased.
    pub async fn erased_leads(&self) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM leads WHERE erased_at IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }
}

impl Store {
    /// The stored events between `since` and `until` (of the leads in
    /// `only`, if any), erased leads and leads with an unreadable event left
    /// out; `progress` hears the count read after each page.
    pub async fn stored_history(
        &self,
        since: Option<Timestamp>,
        until: Timestamp,
        only: &HashSet<String>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<History, StoreError> {
        let erased = self.erased_leads().await?;
        let mut events = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut unreadable: BTreeSet<String> = BTreeSet::new();
        let mut after = 0;
        loop {
            let page = self.stored_events(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in page {
                if erased.contains(&row.lead) || (!only.is_empty() && !only.contains(&row.lead)) {
                    continue;
                }
                let event = serde_json::from_str(&row.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|v| Event::from_stored(&v).map_err(|e| e.to_string()));
                match event {
                    Ok(mut ev) => {
                        if since.is_some_and(|s| ev.at < s) || ev.at > until {
                            continue;
                        }
                        // What it decides does not depend on how it came.
                        ev.imported = None;
                        seen.insert(ev.lead.clone());
                        events.push(ev);
                    }
                    Err(_) => {
                        unreadable.insert(row.lead);
                    }
                }
            }
            progress(events.len());
        }
        if !unreadable.is_empty() {
            events.retain(|e| !unreadable.contains(&e.lead));
        }
        Ok(History {
            events,
            leads: seen.difference(&unreadable).count(),
            erased: erased
                .iter()
                .filter(|l| only.is_empty() || only.contains(*l))
                .count(),
            unreadable: unreadable.len(),
        })
    }
}
