//! The webhook sender: takes due `webhook` rows from the outbox, POSTs them,
//! and records the outcome. At least once (a row is marked sent only after a
//! 2xx), in order per lead (a lead's row waits while an earlier one of its
//! webhooks is pending or retrying), with exponential backoff for 24 hours
//! (`daemon::retry::WEBHOOKS`).
//!
//! Rows are claimed, leased and settled through the outbox's lease protocol
//! (`store/outbox.rs`): a process that dies mid-send leaves the row to be
//! taken again once the lease runs out (or, on SQLite, at the next start).
//! This file holds only the HTTP request and its signature.

use super::{sign, signing_key, WebhookError};
use crate::clock::Clock;
use crate::daemon::metrics::{KindLabels, Metrics, WebhookLabels};
use crate::daemon::retry::{Retries, WEBHOOKS};
use crate::daemon::rules::RulesHandle;
use crate::store::{Note, OutboxKind, OutboxRow, Outcome, Settle, Store};
use nurture_core::writes::TimelineKind;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument as _;

/// Rows taken per round (delivered concurrently, one per lead at most).
const BATCH: i64 = 32;
/// How long a taken row is reserved for the process sending it.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Per request; well under the lease.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Idle poll interval.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

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
    if store.backend == crate::store::Backend::Sqlite {
        match store.release_abandoned(OutboxKind::WEBHOOKS).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                rows = n,
                "webhooks were being sent when the daemon stopped; they are sent again"
            ),
            Err(e) => tracing::error!(error = %e, "releasing abandoned webhooks failed"),
        }
    }
    let mut retries = Retries::default();
    loop {
        if *stop.borrow() {
            return;
        }
        if matches!(store.outbox_hold().await, Ok(Some(_))) {
            // Held (a restore): nothing is claimed until released.
            metrics.outbox_held_polls.inc();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let now = clock.now();
        let taken = match store
            .claim(OutboxKind::WEBHOOKS, now, now + LEASE, BATCH)
            .await
        {
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
            let id = t.msg_key.clone().unwrap_or_default();
            let span = tracing::info_span!("webhook", seq = t.seq, lead = %t.lead, attempt = t.attempts, %id);
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

async fn deliver_one(
    store: Store,
    rules: RulesHandle,
    metrics: Arc<Metrics>,
    clock: Clock,
    client: reqwest::Client,
    t: OutboxRow,
) {
    let (webhook, kind, result) = attempt(&rules, &clock, &client, &t).await;
    let labels = WebhookLabels {
        webhook: webhook.to_string(),
    };
    let now = clock.now();
    let (outcome, note) = match &result {
        Ok(()) => {
            metrics.webhooks_delivered.get_or_create(&labels).inc();
            let secs = (now - t.created_at).num_milliseconds() as f64 / 1000.0;
            metrics
                .delivery_latency
                .get_or_create(&KindLabels {
                    kind: "webhook".into(),
                })
                .observe(secs.max(0.0));
            tracing::info!(%webhook, %kind, "webhook delivered");
            (Outcome::Sent, None)
        }
        Err(e) => {
            metrics.webhook_attempts_failed.get_or_create(&labels).inc();
            let next = if e.is_permanent() {
                None
            } else {
                WEBHOOKS.next_try(t.attempts, t.created_at, now)
            };
            let error = e.to_string();
            match next {
                Some(at) => {
                    tracing::warn!(%webhook, %kind, error = %e, retry_at = %at, "webhook not delivered; will retry");
                    (Outcome::Retry { at, error }, None)
                }
                None => {
                    metrics.webhooks_failed.get_or_create(&labels).inc();
                    tracing::error!(%webhook, %kind, error = %e, "webhook failed for good");
                    // Said on the lead's timeline.
                    let detail = json!({"webhook": webhook, "type": kind, "id": t.msg_key.as_deref().unwrap_or_default(), "attempts": t.attempts, "error": error});
                    let note = Note {
                        kind: TimelineKind::WebhookFailed,
                        detail,
                    };
                    (Outcome::Failed { error }, Some(note))
                }
            }
        }
    };
    let settle = Settle {
        row: &t,
        outcome,
        note,
    };
    if let Err(e) = store.settle(&[settle], &[], now).await {
        // The lease runs out and the row is tried again: at least once.
        tracing::error!(error = %e, "recording a webhook's outcome failed");
    }
}

/// One POST. Returns the webhook's name and type for the logs.
async fn attempt(
    rules: &RulesHandle,
    clock: &Clock,
    client: &reqwest::Client,
    t: &OutboxRow,
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
        let msg_key = t.msg_key.as_deref().unwrap_or_default();
        let mut req = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", msg_key)
            .header("webhook-timestamp", ts.to_string());
        if let Some(key) = key {
            req = req.header("webhook-signature", sign(&key, msg_key, ts, &body));
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

/// A failed request with its causes (reqwest's own message omits them).
fn http_error(e: reqwest::Error) -> WebhookError {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    // reqwest names the URL, which may carry credentials.
    WebhookError::Http(crate::redact::text(&msg))
}
