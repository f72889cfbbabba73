//! The HTTP API (SPEC section 6): routes, authentication and JSON errors.
//! Each route's handler lives in the file named for what it serves.

mod ingest;
mod leads;
mod routing;
mod segment;
mod unsubscribe;

/// The request parsers, pure: what a body becomes before anything is stored.
pub use ingest::parse_events;
pub use segment::{parse_batch as parse_segment_batch, parse_call as parse_segment_call};

use crate::daemon::AppState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/events", post(ingest::events))
        .route("/identify", post(segment::identify))
        .route("/track", post(segment::track))
        .route("/page", post(segment::page))
        .route("/batch", post(segment::batch))
        .route("/leads", get(leads::list))
        .route("/leads/{id}", get(leads::get).delete(leads::erase))
        .route("/leads/{id}/timeline", get(leads::timeline))
        .route("/leads/{id}/feedback", post(leads::feedback))
        .route("/leads/{id}/claim", post(routing::claim))
        .route("/pool", get(routing::pool))
        .route("/reports/funnel", get(leads::funnel))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .nest("/v1", v1)
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::confirm).post(unsubscribe::unsubscribe),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A JSON error: `{"error": {"message", "field"?, "index"?}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    pub index: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
            index: None,
        }
    }
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
            index: None,
        }
    }
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        // The request's own data (a NUL in a path segment on PostgreSQL):
        // retrying cannot help, so it is not a 503.
        if e.is_refused_data() {
            tracing::warn!(error = %e, "refused by the database");
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("refused by the database: {}", e.cause()),
            );
        }
        tracing::error!(error = %e, "storage error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {}; retry later", e.cause()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"message": self.message});
        if let Some(f) = self.field {
            err["field"] = json!(f);
        }
        if let Some(i) = self.index {
            err["index"] = json!(i);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

/// Bearer token on `/v1`; the Segment routes also take it as the Basic-auth
/// user (Segment's write key). Without a configured token, everything is
/// open, and the daemon only listens on loopback.
async fn auth(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = state.api_token.as_deref() else {
        return Ok(next.run(req).await);
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = if let Some(b) = given.strip_prefix("Bearer ") {
        constant_time_eq(b.trim().as_bytes(), token.as_bytes())
    } else if let Some(b) = given.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .is_some_and(|userpass| {
                let user = userpass.split(':').next().unwrap_or("");
                constant_time_eq(user.as_bytes(), token.as_bytes())
            })
    } else {
        false
    };
    if ok {
        Ok(next.run(req).await)
    } else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (Authorization: Bearer TOKEN)",
        );
        e.field = Some("Authorization".into());
        Err(e)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Liveness plus the backlog: events accepted but not applied, work stored.
/// 503 while the database cannot be read, or refuses writes (disk full,
/// read-only): after a write failed, each check tries one small write, so
/// the status comes back by itself once the database takes writes again.
async fn healthz(State(state): State<AppState>) -> Response {
    let write_error = match state.metrics.storage_error() {
        None => None,
        Some(_) => match state.store.probe_write().await {
            Ok(()) => {
                state.metrics.storage_ok();
                None
            }
            Err(e) => {
                let cause = e.cause();
                state.metrics.storage_failed(cause.clone());
                Some(cause)
            }
        },
    };
    let (status, mut body) = match (state.store.queue_depth().await, write_error) {
        (Ok((pending, due)), None) => (
            StatusCode::OK,
            json!({"status": "ok", "events_pending": pending, "due_work": due}),
        ),
        (Ok((pending, due)), Some(cause)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "error": format!("database refuses writes: {cause}"),
                "events_pending": pending, "due_work": due}),
        ),
        (Err(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "error": e.cause()}),
        ),
    };
    // Not a failure of the daemon (the last good rules keep running), but
    // whoever changed the rules should see that the change did not apply.
    if let Some(why) = state.metrics.rules_error() {
        body["rules_rejected"] = json!(why);
    }
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The stored lead, or 404.
pub(crate) async fn stored_lead(
    s: &AppState,
    id: &str,
) -> Result<crate::model::LeadState, ApiError> {
    s.store
        .lead(id)
        .await?
        .ok_or_else(|| ApiError::not_found("lead"))
}

/// The id a request gives its event (`"id"`, to make retries safe), or a
/// fresh one: `prefix:` and the time.
pub(crate) fn request_event_id(
    v: &serde_json::Value,
    prefix: &str,
    now: crate::model::time::Timestamp,
) -> String {
    v.get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{prefix}:{}", now.timestamp_nanos_opt().unwrap_or_default()))
}

/// Parses a request body as JSON, naming where it breaks.
pub(crate) fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}
