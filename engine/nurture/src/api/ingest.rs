//! `POST /v1/events`: one event or `{"batch": [...]}`. All items are checked
//! before any is stored; the answer is 202 once they are durable. With
//! `?import=ID` they are imported history (nothing due by now is sent);
//! `POST /v1/imports` and `DELETE /v1/imports/{id}` open and close one.

pub use super::doc::Accepted;
use super::ApiError;
use super::AppState;
use crate::model::time::Timestamp;
use crate::model::Event;
use crate::store::IngestError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use nurture_core::ingest::parse_events;

/// `?import=ID`: the events are history moving in, in an import opened
/// with `POST /v1/imports` (docs/daemon.md, Importing history): what they
/// decide up to now is recorded, not sent, and due work waits for them.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// An open import's id (`POST /v1/imports`).
    #[serde(default)]
    import: Option<String>,
}

/// One event or `{"batch": [...]}`, stored durably before the answer.
#[utoipa::path(post, path = "/events", tag = "ingest", params(Params),
    request_body = super::doc::EventsBody,
    responses(
        (status = 202, description = "Stored (new and duplicate counts).", body = Accepted),
        (status = 400, description = "A bad event: the field (and item) at fault.", body = super::doc::ErrorBody),
        (status = 409, description = "No such open import.", body = super::doc::ErrorBody),
        (status = 413, description = "Body over 1 MiB.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = []), ("write_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let now = state.clock.now();
    let mut events = parse_events(&body, now)?;
    let Some(import) = params.import else {
        return accept(&state, events, now).await;
    };
    if !state.store.import_stored(&import, None, now).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("no open import {import:?}: open one with POST /v1/imports (an import not heard from for two minutes is closed)"),
        ));
    }
    for e in &mut events {
        e.imported = Some(now);
    }
    let frontier = events.iter().map(|e| e.at).max();
    let answer = accept(&state, events, now).await?;
    // Only once they are stored may due work run up to them.
    state.store.import_stored(&import, frontier, now).await?;
    Ok(answer)
}

/// An import opened: pass its `id` as `?import=` with the events.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ImportOpened {
    id: String,
    /// Closed if not heard from for this long.
    expires_after_s: i64,
}

/// `POST /v1/imports`: opens an import; due work waits for its events
/// until `DELETE /v1/imports/{id}`.
#[utoipa::path(post, path = "/imports", tag = "ingest",
    responses((status = 201, description = "Opened.", body = ImportOpened)),
    security(("api_token" = [])))]
pub async fn open_import(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<ImportOpened>), ApiError> {
    let id = state.store.open_import(state.clock.now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportOpened {
            id,
            expires_after_s: crate::store::IMPORT_EXPIRES_MS / 1000,
        }),
    ))
}

/// `DELETE /v1/imports/{id}`: the import is done; due work goes on.
#[utoipa::path(delete, path = "/imports/{id}", tag = "ingest",
    params(("id" = String, Path, description = "The import's id.")),
    responses(
        (status = 204, description = "Closed."),
        (status = 404, description = "No such open import.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn close_import(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.close_import(&id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no open import {id:?}"),
        ));
    }
    // Due work held back goes on at once.
    state.partitions.touch(state.partitions.held());
    Ok(StatusCode::NO_CONTENT)
}

/// Stores checked events and answers 202 with what was new.
pub(crate) async fn accept(
    state: &AppState,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
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
        Json(Accepted {
            accepted: inserted,
            duplicates: total - inserted,
        }),
    ))
}
