//! The HTTP API (SPEC section 6): routes, authentication and JSON errors.
//! Each route's handler lives in the file named for what it serves.

pub mod access;
pub mod doc;
mod ingest;
mod leads;
pub mod limit;
mod observe;
pub mod preview;
mod quarantine;
mod routing;
mod segment;
pub mod server;
mod state;
mod unsubscribe;

pub use state::AppState;

use access::{Holder, Origins};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// The routes, each registered with its path in the OpenAPI document by
/// the same `routes!` call, in the groups that share an authentication
/// layer. [`router`] serves them and [`openapi`] documents them: a route
/// cannot be served without being documented (the crate's clippy.toml
/// refuses `Router::route`, which would add one unseen).
struct Groups {
    /// `POST /v1/events`: write keys or the API token.
    events: OpenApiRouter<AppState>,
    /// Segment's routes: the same, or `writeKey` in the body.
    segment: OpenApiRouter<AppState>,
    /// The API token only.
    admin: OpenApiRouter<AppState>,
    /// No credential.
    public: OpenApiRouter<AppState>,
}

fn groups() -> Groups {
    // Segment's short paths (`/v1/t`, `/v1/i`, `/v1/p`, `/v1/b`) are where
    // analytics.js posts.
    Groups {
        events: OpenApiRouter::default().routes(routes!(ingest::events)),
        segment: OpenApiRouter::default()
            .routes(routes!(segment::identify))
            .routes(routes!(segment::identify_short))
            .routes(routes!(segment::track))
            .routes(routes!(segment::track_short))
            .routes(routes!(segment::page))
            .routes(routes!(segment::page_short))
            .routes(routes!(segment::batch))
            .routes(routes!(segment::batch_short)),
        admin: OpenApiRouter::default()
            .routes(routes!(leads::list))
            .routes(routes!(leads::get, leads::erase))
            .routes(routes!(leads::timeline))
            .routes(routes!(leads::feedback))
            .routes(routes!(routing::claim))
            .routes(routes!(routing::pool))
            .routes(routes!(leads::funnel))
            .routes(routes!(quarantine::list))
            .routes(routes!(quarantine::retry))
            .routes(routes!(preview::start))
            .routes(routes!(preview::get, preview::cancel))
            .routes(routes!(ingest::open_import))
            .routes(routes!(ingest::close_import)),
        public: OpenApiRouter::default()
            .routes(routes!(unsubscribe::confirm, unsubscribe::unsubscribe))
            .routes(routes!(healthz))
            .routes(routes!(observe::readyz))
            .routes(routes!(observe::metrics))
            .routes(routes!(openapi_json)),
    }
}

/// The OpenAPI 3.1 document of every route (`GET /openapi.json`,
/// `nurture openapi`).
pub fn openapi() -> serde_json::Value {
    let g = groups();
    let api = OpenApiRouter::<AppState>::default()
        .nest("/v1", g.events.merge(g.segment).merge(g.admin))
        .merge(g.public)
        .into_openapi();
    doc::finish(serde_json::to_value(api).unwrap_or_default())
}

pub fn router(state: AppState) -> Router {
    let g = groups();
    // Sending events: write keys (or the API token, from servers), CORS
    // for the configured browser origins.
    let mut ingest: Router<AppState> = Router::from(
        g.events
            .route_layer(middleware::from_fn_with_state(state.clone(), auth_events))
            .merge(
                g.segment
                    .route_layer(middleware::from_fn_with_state(state.clone(), auth_segment)),
            ),
    );
    if let Some(cors) = cors(&state.access.origins) {
        ingest = ingest.layer(cors);
    }
    let admin: Router<AppState> = Router::from(
        g.admin
            .route_layer(middleware::from_fn_with_state(state.clone(), auth_admin)),
    );
    let document = Arc::new(openapi());
    Router::new()
        .nest("/v1", ingest.merge(admin))
        .merge(Router::from(g.public))
        .fallback(no_route)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_declared_large_bodies))
        .layer(middleware::map_response(json_errors))
        // Outermost: sees every answer as sent, with its route template.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::access,
        ))
        .with_state(state)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(doc): Extension<Arc<serde_json::Value>>) -> Response {
    Json(doc.as_ref()).into_response()
}

/// A body whose `Content-Length` is over the limit is refused before a byte
/// of it is read (the limit itself also holds for bodies without one).
async fn refuse_declared_large_bodies(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > BODY_LIMIT as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {BODY_LIMIT} bytes ({n} declared)"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// Every error is the JSON error, also those axum and its extractors make
/// (413 from the body limit, 405, 415, a bad query string): their text
/// becomes the message, their headers (`Allow`, ...) stay.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    // JSON already, or a page for a person (the unsubscribe link's).
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("request body over {BODY_LIMIT} bytes")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        String::from_utf8_lossy(&text).trim().to_string()
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = ApiError::new(status, message).into_response();
    let (jparts, jbody) = json.into_parts();
    parts.headers.extend(jparts.headers);
    Response::from_parts(parts, jbody)
}

/// The client's address, when the request came through [`server::serve`].
fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<server::Peer>().map(|p| p.0.ip())
}

/// 429 for an address that has failed to authenticate too often.
fn too_many_failures(retry_after: u64) -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed authentications from this address; retry in {retry_after} s"),
    );
    e.field = Some("Authorization".into());
    let mut res = e.into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    res
}

/// 429 for ingest past a rate limit (`--ingest-per-key`, `--ingest-per-address`).
fn too_fast((over, retry_after): (limit::Over, u64), key: Option<&str>) -> Response {
    let message = match (over, key) {
        (limit::Over::Key, Some(name)) => format!(
            "write key {name} is over its request rate (--ingest-per-key); retry in {retry_after} s"
        ),
        _ => format!(
            "this address is over its request rate (--ingest-per-address); retry in {retry_after} s"
        ),
    };
    let mut res = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    res
}

/// CORS for the ingest routes: preflight answered for the allowed origins,
/// which may send the JSON content type and an Authorization header.
fn cors(origins: &Origins) -> Option<CorsLayer> {
    let allow = match origins {
        Origins::None => return None,
        Origins::Any => AllowOrigin::any(),
        Origins::List(l) => AllowOrigin::list(l.clone()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .max_age(std::time::Duration::from_secs(24 * 3600)),
    )
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

/// A refused body: 400, naming the field (and the item of a batch).
impl From<nurture_core::ingest::BadInput> for ApiError {
    fn from(e: nurture_core::ingest::BadInput) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.message,
            field: Some(e.field),
            index: e.index,
        }
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
        // Not the database being away: retrying will not help.
        if let crate::store::StoreError::Corrupt { .. } = e {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e} (the processor sets such a lead aside: `nurture doctor` lists it)"),
            );
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {}; retry later", e.cause()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = doc::ErrorBody {
            error: doc::ErrorDetail {
                message: self.message,
                field: self.field,
                index: self.index,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The credential a request carries: a Bearer token, or the Basic-auth
/// user (Segment's write key, with an empty password).
fn header_credential(req: &Request) -> Option<String> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    if let Some(b) = given.strip_prefix("Bearer ") {
        return Some(b.trim().to_string());
    }
    let b = given.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let userpass = String::from_utf8(raw).ok()?;
    Some(userpass.split(':').next().unwrap_or("").to_string())
}

fn unauthorized(what: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, format!("missing or wrong {what}"));
    e.field = Some("Authorization".into());
    e
}

fn forbidden(message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(StatusCode::FORBIDDEN, message);
    e.field = Some("Authorization".into());
    e
}

/// The admin routes (leads, erasure, claims, reports): the API token only,
/// when one is set. A write key is refused here whether or not a token is
/// set: it is meant to be public.
async fn auth_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = peer_ip(&req);
    if let Some(wait) = ip.and_then(|ip| state.auth_failures.blocked(ip)) {
        return Ok(too_many_failures(wait));
    }
    let holder = header_credential(&req).and_then(|c| state.access.holder(&c));
    match holder {
        Some(Holder::Writer(name)) => Err(forbidden(format!(
            "this is a write key ({name}): it may only send events (POST /v1/events, \
             /v1/identify, /v1/track, /v1/page, /v1/batch); this route needs the API token"
        ))),
        Some(Holder::Admin) => Ok(next.run(req).await),
        None if !state.access.admin_required() => Ok(next.run(req).await),
        None => {
            if let Some(ip) = ip {
                state.auth_failures.failed(ip);
            }
            Err(unauthorized("API token (Authorization: Bearer TOKEN)"))
        }
    }
}

async fn auth_events(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    auth_ingest(&state, req, next, false).await
}

/// Segment's routes also take the write key from the body (`writeKey`), as
/// analytics.js sends it from a browser.
async fn auth_segment(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    auth_ingest(&state, req, next, true).await
}

/// The ingest routes: a write key, or the API token from a server. A
/// request from a browser (it has an `Origin` header) must come from an
/// allowed origin, and never with the API token, which a web page would
/// give away.
async fn auth_ingest(
    state: &AppState,
    req: Request,
    next: Next,
    key_in_body: bool,
) -> Result<Response, ApiError> {
    let ip = peer_ip(&req);
    if let Some(wait) = ip.and_then(|ip| state.auth_failures.blocked(ip)) {
        return Ok(too_many_failures(wait));
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(o) = &origin {
        if !state.access.origins.allows(o) {
            let mut e = ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "origin {} may not send events here (allowed origins: --cors-origin)",
                    String::from_utf8_lossy(o.as_bytes())
                ),
            );
            e.field = Some("Origin".into());
            return Err(e);
        }
    }
    let mut req = req;
    let mut given = header_credential(&req);
    if given.is_none() && key_in_body && state.access.ingest_required() {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {BODY_LIMIT} bytes"),
            )
        })?;
        given = segment::body_write_key(&bytes);
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let holder = given.and_then(|c| state.access.holder(&c));
    let admit = |key: Option<&str>| state.ingest_limits.admit(ip, key).err();
    match holder {
        Some(Holder::Admin) if origin.is_some() => Err(forbidden(
            "the API token is not accepted from a browser (this request has an Origin \
             header): web pages send events with a write key (--write-key)",
        )),
        Some(Holder::Writer(name)) => match admit(Some(&name)) {
            Some(over) => Ok(too_fast(over, Some(&name))),
            None => Ok(next.run(req).await),
        },
        Some(Holder::Admin) => match admit(None) {
            Some(over) => Ok(too_fast(over, None)),
            None => Ok(next.run(req).await),
        },
        None if !state.access.ingest_required() => match admit(None) {
            Some(over) => Ok(too_fast(over, None)),
            None => Ok(next.run(req).await),
        },
        None => {
            if let Some(ip) = ip {
                state.auth_failures.failed(ip);
            }
            Err(unauthorized(
                "write key (Authorization: Basic base64(KEY:), Bearer KEY, or Segment's writeKey)",
            ))
        }
    }
}

/// Liveness plus the backlog: events accepted but not applied, work stored,
/// leads in quarantine. 503 while the database cannot be read, or refuses
/// writes (disk full, read-only): after a write failed, each check tries one
/// small write, so the status comes back by itself once the database takes
/// writes again. 200 `degraded` while leads are in quarantine or the
/// processor is not advancing: the daemon serves, but work waits.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "Serving: `ok` or `degraded`.", body = doc::Health),
        (status = 503, description = "The database cannot be read or refuses writes.", body = doc::Health),
    ))]
async fn healthz(State(state): State<AppState>) -> Response {
    let write_error = match state.health.storage_error() {
        None => None,
        Some(_) => match state.store.probe_write().await {
            Ok(()) => {
                state.health.storage_ok();
                None
            }
            Err(e) => {
                let cause = e.cause();
                state.metrics.storage_failed(cause.clone());
                Some(cause)
            }
        },
    };
    let quarantined = state.store.quarantine_count().await;
    let held = state.store.outbox_hold().await.ok().flatten();
    let (status, mut body) = match (state.store.queue_depth().await, write_error) {
        (Ok((pending, due)), None) => {
            let mut degraded = Vec::new();
            if let Ok(n @ 1..) = quarantined {
                degraded.push(format!(
                    "{n} lead{} in quarantine, {} events waiting (`nurture doctor` lists them)",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "its" } else { "their" }
                ));
            }
            if let Some(since) = &held {
                degraded.push(format!(
                    "the outbox is held since {since} (a restore): nothing is sent until `nurture outbox release` or `nurture outbox cancel`"
                ));
            }
            let stalled = state.health.since_processor_advanced();
            if stalled >= state.health.stall_after() {
                degraded.push(format!(
                    "the processor has not advanced for {} s (no step committed; more than --stall-after {} s)",
                    stalled.as_secs(),
                    state.health.stall_after().as_secs_f64()
                ));
            }
            if let Some(d) = state.health.mail_down() {
                degraded.push(format!(
                    "mail: down for {} s ({} failed sends): {}; messages wait and are retried",
                    state.health.secs_since(d.since),
                    d.failures,
                    d.cause
                ));
            }
            let mut body = json!({"status": if degraded.is_empty() { "ok" } else { "degraded" },
                "events_pending": pending, "due_work": due});
            if !degraded.is_empty() {
                body["degraded"] = json!(degraded);
            }
            (StatusCode::OK, body)
        }
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
    if let Ok(n) = quarantined {
        body["quarantined"] = json!(n);
    }
    if let Ok(n) = state.store.outbox_pending().await {
        body["outbox_pending"] = json!(n);
    }
    if let Some(since) = held {
        body["outbox_held_since"] = json!(since);
    }
    // Not a failure of the daemon (the last good rules keep running), but
    // whoever changed the rules should see that the change did not apply.
    if let Some(why) = state.health.rules_error() {
        body["rules_rejected"] = json!(why);
    }
    (status, Json(body)).into_response()
}

/// The stored lead, or 404.
pub(crate) async fn stored_lead(
    s: &AppState,
    id: &str,
) -> Result<crate::model::LeadState, ApiError> {
    // No lead id holds a NUL (events with one are refused), and PostgreSQL
    // would refuse the query.
    if id.contains('\0') {
        return Err(ApiError::not_found("lead"));
    }
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
    Ok(nurture_core::ingest::parse_body(body)?)
}
