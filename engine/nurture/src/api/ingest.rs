//! `POST /v1/events`: one event or `{"batch": [...]}`. All items are checked
//! before any is stored; the answer is 202 once they are durable.

use super::ApiError;
use super::AppState;
use crate::model::time::Timestamp;
use crate::model::Event;
use crate::store::IngestError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nurture_core::ingest::parse_events;
use serde_json::{json, Value};

pub async fn events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = state.clock.now();
    let events = parse_events(&body, now)?;
    accept(&state, events, now).await
}

/// Stores checked events and answers 202 with what was new.
pub(crate) async fn accept(
    state: &AppState,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let total = events.len() as u64;
    let parts: std::collections::BTreeSet<i64> = events
        .iter()
        .map(|e| state.store.part_of(&e.lead))
        .collect();
    // Not stored, not acknowledged: the client hears why, and retries
    // unless it was its own data the database refused.
    let inserted = state.ingest.submit(events, now).await.map_err(|e| {
        let status = match e {
            IngestError::Refused(_) => StatusCode::BAD_REQUEST,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })?;
    state.metrics.events_ingested.inc_by(inserted);
    state.metrics.events_duplicate.inc_by(total - inserted);
    if inserted > 0 {
        state.partitions.touch(parts);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": inserted, "duplicates": total - inserted})),
    ))
}
