//! The webhook sender: takes due `webhook` rows from the outbox, POSTs them,
//! and records the outcome. At least once (a row is marked sent only after a
//! 2xx), in order per lead (a lead's row waits while an earlier one of its
//! webhooks is pending or retrying), with exponential backoff for 24 hours.
//!
//! A row being sent is leased: `state = 'sending'` and `next_at` = when the
//! lease ends. A process that dies mid-send leaves the row to be taken again
//! once the lease runs out. On PostgreSQL, `FOR UPDATE SKIP LOCKED` keeps two
//! processes from taking the same row; SQLite has one writer.

use super::{sign, signing_key, WebhookError};
use crate::clock::Clock;
use crate::daemon::metrics::Metrics;
use crate::daemon::rules::RulesHandle;
use crate::store::{millis, Backend, Store, StoreError};
use chrono::Duration;
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument as _;

/// Rows taken per round (delivered concurrently, one per lead at most).
const BATCH: i64 = 32;
/// How long a taken row is reserved for the process sending it.
const LEASE: Duration = Duration::seconds(60);
/// Per request; well under the lease.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a webhook is retried before it is given up as failed.
pub const GIVE_UP_AFTER: Duration = Duration::hours(24);
/// Idle poll interval.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The delay before retry number `attempts` (1 after the first failure):
/// 1 s, 2 s, 4 s, ... doubling up to an hour.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 13) - 1;
    Duration::seconds((1i64 << exp).min(3600))
}

/// After a failed attempt: when to try again, or `None` to give up. The last
/// try is at the 24-hour mark.
pub fn retry_at(
    attempts: i64,
    created: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let end = created + GIVE_UP_AFTER;
    if now >= end {
        return None;
    }
    Some((now + backoff(attempts)).min(end))
}

/// One row taken for delivery.
struct Taken {
    seq: i64,
    lead: String,
    payload: String,
    created_at: i64,
    attempts: i64,
    msg_key: String,
}

/// Runs until `stop`; a round in flight finishes first.
pub async fn run(
    store: Store,
    rules: RulesHandle,
    metrics: Arc<Metrics>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("nurture/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: no HTTP client");
            return;
        }
    };
    let mut retries = crate::daemon::retry::Retries::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let taken = match take(&store, clock.now()).await {
            Ok(t) => {
                retries.succeeded();
                t
            }
            Err(e) => {
                let wait = retries.failed("taking webhooks from the outbox", &e, &metrics);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let full = taken.len() as i64 == BATCH;
        let mut round = tokio::task::JoinSet::new();
        for t in taken {
            let span = tracing::info_span!("webhook", seq = t.seq, lead = %t.lead, attempt = t.attempts, id = %t.msg_key);
            round.spawn(
                deliver_one(
                    store.clone(),
                    rules.clone(),
                    metrics.clone(),
                    clock.clone(),
                    client.clone(),
                    t,
                )
                .instrument(span),
            );
        }
        while round.join_next().await.is_some() {}
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Takes the due rows that are first in line for their lead.
async fn take(store: &Store, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Taken>, StoreError> {
    let lock = match store.backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let q = format!(
        "UPDATE outbox SET state = 'sending', attempts = attempts + 1, next_at = $1, \
         msg_key = COALESCE(msg_key, 'msg_' || CAST(created_at AS TEXT) || '_' || CAST(seq AS TEXT)) \
         WHERE seq IN (SELECT o.seq FROM outbox o \
           WHERE o.kind = 'webhook' AND o.state IN ('pending', 'sending') AND o.next_at <= $2 \
           AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.lead = o.lead AND e.kind = 'webhook' \
             AND e.seq < o.seq AND e.state IN ('pending', 'sending')) \
           ORDER BY o.seq LIMIT $3{lock}) \
         RETURNING seq, lead, payload, created_at, attempts, msg_key"
    );
    let sql = store.sql(&q);
    let rows = sqlx::query(&sql)
        .bind(millis(&(now + LEASE)))
        .bind(millis(&now))
        .bind(BATCH)
        .fetch_all(&store.writer)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(Taken {
            seq: r.try_get(0)?,
            lead: r.try_get(1)?,
            payload: r.try_get(2)?,
            created_at: r.try_get(3)?,
            attempts: r.try_get(4)?,
            msg_key: r.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
        });
    }
    out.sort_by_key(|t| t.seq);
    Ok(out)
}

async fn deliver_one(
    store: Store,
    rules: RulesHandle,
    metrics: Arc<Metrics>,
    clock: Clock,
    client: reqwest::Client,
    t: Taken,
) {
    let (webhook, kind, result) = attempt(&rules, &clock, &client, &t).await;
    let now = clock.now();
    let outcome = match &result {
        Ok(()) => {
            metrics.webhooks_delivered.inc();
            tracing::info!(%webhook, %kind, "webhook delivered");
            mark(&store, &t, Mark::Sent(millis(&now))).await
        }
        Err(e) => {
            metrics.webhook_attempts_failed.inc();
            let created = crate::store::from_millis(t.created_at);
            let next = if e.is_permanent() {
                None
            } else {
                retry_at(t.attempts, created, now)
            };
            match next {
                Some(at) => {
                    tracing::warn!(%webhook, %kind, error = %e, retry_at = %at, "webhook not delivered; will retry");
                    mark(&store, &t, Mark::Retry(millis(&at), e.to_string())).await
                }
                None => {
                    metrics.webhooks_failed.inc();
                    tracing::error!(%webhook, %kind, error = %e, "webhook failed for good");
                    give_up(&store, &t, &webhook, &kind, &e.to_string(), now).await
                }
            }
        }
    };
    if let Err(e) = outcome {
        // The lease runs out and the row is tried again: at least once.
        tracing::error!(error = %e, "recording a webhook's outcome failed");
    }
}

/// One POST. Returns the webhook's name and type for the logs.
async fn attempt(
    rules: &RulesHandle,
    clock: &Clock,
    client: &reqwest::Client,
    t: &Taken,
) -> (String, String, Result<(), WebhookError>) {
    let payload: Value = match serde_json::from_str(&t.payload) {
        Ok(v) => v,
        Err(e) => {
            return (
                String::new(),
                String::new(),
                Err(WebhookError::Payload(e.to_string())),
            )
        }
    };
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(name), Some(kind), Some(body)) = (text("webhook"), text("type"), text("body")) else {
        return (
            String::new(),
            String::new(),
            Err(WebhookError::Payload(
                "missing webhook, type or body".into(),
            )),
        );
    };
    let result = async {
        let active = rules.current();
        let target = active
            .rules
            .webhooks
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| WebhookError::Unknown(name.clone()))?;
        let key = signing_key(target.secret.as_deref())?;
        // Signed per attempt: receivers reject stale timestamps.
        let ts = clock.now().timestamp();
        let mut req = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &t.msg_key)
            .header("webhook-timestamp", ts.to_string());
        if let Some(key) = key {
            req = req.header("webhook-signature", sign(&key, &t.msg_key, ts, &body));
        }
        let resp = req.body(body.clone()).send().await.map_err(http_error)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(resp.status().as_u16()))
        }
    }
    .await;
    (name, kind, result)
}

enum Mark {
    /// Delivered at (ms).
    Sent(i64),
    /// Try again at (ms), after this error.
    Retry(i64, String),
}

/// Records an outcome if the row is still ours (no other process took it
/// after our lease ran out).
async fn mark(store: &Store, t: &Taken, m: Mark) -> Result<(), StoreError> {
    let q = match m {
        Mark::Sent(_) => "UPDATE outbox SET state = 'sent', sent_at = $1, last_error = NULL WHERE seq = $2 AND attempts = $3",
        Mark::Retry(..) => "UPDATE outbox SET state = 'pending', next_at = $1, last_error = $2 WHERE seq = $3 AND attempts = $4",
    };
    let sql = store.sql(q);
    let query = match m {
        Mark::Sent(at) => sqlx::query(&sql).bind(at),
        Mark::Retry(at, error) => sqlx::query(&sql).bind(at).bind(error),
    };
    query
        .bind(t.seq)
        .bind(t.attempts)
        .execute(&store.writer)
        .await?;
    Ok(())
}

/// Marks the row failed and says so on the lead's timeline.
async fn give_up(
    store: &Store,
    t: &Taken,
    webhook: &str,
    kind: &str,
    error: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    let sql = store.sql(
        "UPDATE outbox SET state = 'failed', last_error = $1 WHERE seq = $2 AND attempts = $3",
    );
    sqlx::query(&sql)
        .bind(error.to_string())
        .bind(t.seq)
        .bind(t.attempts)
        .execute(&mut *tx)
        .await?;
    let detail = json!({"webhook": webhook, "type": kind, "id": t.msg_key, "attempts": t.attempts, "error": error});
    let sql = store
        .sql("INSERT INTO timeline (lead, at, kind, detail) VALUES ($1, $2, 'webhook_failed', $3)");
    sqlx::query(&sql)
        .bind(t.lead.clone())
        .bind(millis(&now))
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A failed request with its causes (reqwest's own message omits them).
fn http_error(e: reqwest::Error) -> WebhookError {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    WebhookError::Http(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let secs: Vec<i64> = (1..=14).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(
            secs,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
    }

    #[test]
    fn retries_stop_after_a_day_with_a_last_try_at_the_mark() {
        let t0 = crate::model::time::parse("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(retry_at(1, t0, t0), Some(t0 + Duration::seconds(1)));
        let late = t0 + Duration::hours(23) + Duration::minutes(50);
        assert_eq!(retry_at(20, t0, late), Some(t0 + GIVE_UP_AFTER));
        assert_eq!(retry_at(21, t0, t0 + GIVE_UP_AFTER), None);
    }
}
