//! Segment-compatible ingestion: `identify`, `track`, `page` and `batch`
//! (the mapping onto Nurture events is `nurture_core::ingest`).

use super::ingest::{accept, Accepted};
use super::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nurture_core::ingest::{parse_segment_batch as parse_batch, parse_segment_call as parse_call};

/// Segment's `identify` (analytics.js, server libraries).
#[utoipa::path(post, path = "/identify", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn identify(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "identify", &body).await
}

/// Segment's short path for `identify`, where analytics.js posts.
#[utoipa::path(post, path = "/i", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn identify_short(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "identify", &body).await
}

/// Segment's `track` (analytics.js, server libraries).
#[utoipa::path(post, path = "/track", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn track(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "track", &body).await
}

/// Segment's short path for `track`, where analytics.js posts.
#[utoipa::path(post, path = "/t", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn track_short(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "track", &body).await
}

/// Segment's `page` (analytics.js, server libraries).
#[utoipa::path(post, path = "/page", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn page(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "page", &body).await
}

/// Segment's short path for `page`, where analytics.js posts.
#[utoipa::path(post, path = "/p", tag = "segment", request_body = super::doc::SegmentCall,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn page_short(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    one(&s, "page", &body).await
}

/// Segment's `batch`: calls each with its `type`.
#[utoipa::path(post, path = "/batch", tag = "segment", request_body = super::doc::SegmentBatch,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn batch(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    batch_of(&s, &body).await
}

/// Segment's short path for `batch`.
#[utoipa::path(post, path = "/b", tag = "segment", request_body = super::doc::SegmentBatch,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad call: the field at fault.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn batch_short(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    batch_of(&s, &body).await
}

async fn batch_of(s: &AppState, body: &[u8]) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let now = s.clock.now();
    let events = parse_batch(body, now)?;
    accept(s, events, now).await
}

async fn one(
    s: &AppState,
    kind: &str,
    body: &[u8],
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let now = s.clock.now();
    let e = parse_call(kind, body, now)?;
    accept(s, vec![e], now).await
}

/// The `writeKey` analytics.js puts in every body: from a browser it sends
/// no Authorization header (its requests are `text/plain`, which needs no
/// CORS preflight).
pub(crate) fn body_write_key(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Keyed {
        #[serde(rename = "writeKey")]
        write_key: Option<String>,
    }
    serde_json::from_slice::<Keyed>(body).ok()?.write_key
}
