//! Segment-compatible ingestion: `identify`, `track`, `page` and `batch`
//! (the mapping onto Nurture events is `nurture_core::ingest`).

use super::ingest::accept;
use super::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nurture_core::ingest::{parse_segment_batch as parse_batch, parse_segment_call as parse_call};
use serde_json::Value;

pub async fn identify(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    one(&s, "identify", &body).await
}
pub async fn track(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    one(&s, "track", &body).await
}
pub async fn page(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    one(&s, "page", &body).await
}

pub async fn batch(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = s.clock.now();
    let events = parse_batch(&body, now)?;
    accept(&s, events, now).await
}

async fn one(s: &AppState, kind: &str, body: &[u8]) -> Result<(StatusCode, Json<Value>), ApiError> {
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
