//! What the API says about itself: `/readyz` (whether this daemon should
//! get traffic and is doing its work: database writable, backlog within
//! `--ready-max-lag`, processor advancing, mail transport up), `/metrics`
//! (backlog gauges read at the scrape), and the layer every request passes:
//! a request id (the client's `X-Request-Id`, or one made here, returned in
//! the response), an access-log line, and the HTTP metrics by route
//! template.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument as _;

use crate::daemon::gauges;
use crate::daemon::metrics::HttpLabels;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id from the client is kept if it is this short and plain
/// (it goes into logs as is).
const MAX_ID: usize = 128;

/// Request ids made here: this process's start (ms, base 36) and a count,
/// unique across restarts without a random source per request.
fn next_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        format!("{}{:x}", base36(ms), std::process::id() & 0xfff)
    });
    format!("{prefix}-{}", COUNT.fetch_add(1, Ordering::Relaxed) + 1)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The client's id if usable: visible ASCII, no spaces, at most MAX_ID.
fn given_id(req: &Request) -> Option<String> {
    let v = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    (!v.is_empty() && v.len() <= MAX_ID && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_string())
}

/// The method as a label: the usual ones by name, anything else `other`
/// (a client cannot make new series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every request: its id, one access-log line (target `nurture::access`,
/// at info: method, route template, status, duration, request id; never
/// the raw path, which can hold a lead id or an unsubscribe token), and
/// the HTTP metrics.
pub async fn access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = given_id(&req).unwrap_or_else(next_id);
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status();
    let secs = started.elapsed().as_secs_f64();
    let labels = HttpLabels {
        method: method.to_string(),
        route: route.clone(),
        code: status.as_u16().to_string(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_duration
        .get_or_create(&labels)
        .observe(secs);
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    span.in_scope(|| {
        tracing::info!(
            target: "nurture::access",
            method,
            route = %route,
            status = status.as_u16(),
            duration_ms = (secs * 1e6).round() / 1e3,
            "request"
        )
    });
    res
}

/// The readiness checks, also run by `/metrics` (`nurture_ready`).
pub struct Readiness {
    pub ready: bool,
    pub body: Value,
}

/// Whether this daemon is ready, and why not: the database takes writes
/// (probed again after a failure, as `/healthz` does), the oldest waiting
/// event and the oldest overdue work are younger than `--ready-max-lag`,
/// the processor advances (`--stall-after`), the mail transport's last
/// send did not fail for now. A rejected rules change is reported but does
/// not make the daemon unready: the rules in force keep running.
pub async fn readiness(state: &AppState) -> Readiness {
    let now = state.clock.now();
    let mut reasons: Vec<String> = Vec::new();
    let mut checks = serde_json::Map::new();
    if state.health.storage_error().is_some() {
        match state.store.probe_write().await {
            Ok(()) => state.health.storage_ok(),
            Err(e) => state.metrics.storage_failed(e.cause()),
        }
    }
    match state.health.storage_error() {
        Some(cause) => {
            reasons.push(format!("database: refuses writes: {cause}"));
            checks.insert("database".into(), json!({"ok": false, "error": cause}));
        }
        None => {
            checks.insert("database".into(), json!({"ok": true}));
        }
    }
    let max_lag = state.health.ready_max_lag().as_secs_f64();
    match gauges::refresh(&state.store, &state.metrics, now).await {
        Ok(b) => {
            let age = |t: Option<crate::model::time::Timestamp>| {
                t.map_or(0.0, |t| {
                    ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
                })
            };
            let event_age = age(b.oldest_pending_event);
            let overdue_age = age(b.oldest_overdue);
            if event_age > max_lag {
                reasons.push(format!(
                    "backlog: the oldest waiting event was received {event_age:.0} s ago (more than --ready-max-lag {max_lag} s); {} events pending",
                    b.events_pending
                ));
            }
            if overdue_age > max_lag {
                reasons.push(format!(
                    "backlog: the oldest overdue work was due {overdue_age:.0} s ago (more than --ready-max-lag {max_lag} s); {} items overdue",
                    b.due_overdue
                ));
            }
            checks.insert(
                "backlog".into(),
                json!({"ok": event_age <= max_lag && overdue_age <= max_lag,
                    "events_pending": b.events_pending,
                    "oldest_pending_event_s": event_age,
                    "due_work_overdue": b.due_overdue,
                    "oldest_overdue_s": overdue_age,
                    "max_lag_s": max_lag}),
            );
        }
        Err(e) => {
            reasons.push(format!("database: cannot be read: {}", e.cause()));
            checks.insert("backlog".into(), json!({"ok": false, "error": e.cause()}));
        }
    }
    let stalled = state.health.since_processor_advanced();
    let stall_after = state.health.stall_after();
    if stalled >= stall_after {
        reasons.push(format!(
            "processor: has not advanced for {} s (more than --stall-after {} s)",
            stalled.as_secs(),
            stall_after.as_secs_f64()
        ));
    }
    checks.insert(
        "processor".into(),
        json!({"ok": stalled < stall_after, "since_advanced_s": stalled.as_secs()}),
    );
    match state.health.mail_down() {
        Some(d) => {
            let down_s = state.health.secs_since(d.since);
            reasons.push(format!(
                "mail: down for {down_s} s ({} failed sends): {}",
                d.failures, d.cause
            ));
            checks.insert(
                "mail".into(),
                json!({"ok": false, "down_s": down_s, "failures": d.failures, "error": d.cause}),
            );
        }
        None => {
            checks.insert("mail".into(), json!({"ok": true}));
        }
    }
    let active = state.rules.current();
    let mut rules = json!({"ok": true, "loaded": active.rules.summary()});
    if let Some(why) = state.health.rules_error() {
        rules["rejected"] = json!(why);
    }
    checks.insert("rules".into(), rules);
    let ready = reasons.is_empty();
    state.metrics.ready.set(i64::from(ready));
    let mut body = json!({"status": if ready { "ready" } else { "not ready" }, "checks": checks});
    if !ready {
        body["reasons"] = json!(reasons);
    }
    Readiness { ready, body }
}

/// 200 `ready`, or 503 `not ready` with the reasons (a load balancer or
/// Kubernetes readiness probe reads the status; people read the reasons).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to take traffic.", body = super::doc::Readiness),
        (status = 503, description = "Not ready: the reasons say why.", body = super::doc::Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let r = readiness(&state).await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r.body)).into_response()
}

/// The metrics, with the backlog gauges and `nurture_ready` read now.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    readiness(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_distinct_and_plain() {
        let (a, b) = (next_id(), next_id());
        assert_ne!(a, b);
        assert!(
            a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'),
            "{a}"
        );
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36 * 36 + 35), "10z");
    }
}
