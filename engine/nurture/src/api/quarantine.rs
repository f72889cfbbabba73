//! Leads in quarantine over HTTP (admin token): `GET /v1/quarantine` lists
//! them with their cause, `POST /v1/quarantine/{lead}/retry` releases one,
//! so that its waiting events are applied again. `nurture doctor` does the
//! same from the command line.

use super::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

pub async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let leads = s.store.quarantined().await?;
    Ok(Json(json!({ "leads": leads })))
}

pub async fn retry(
    State(s): State<AppState>,
    Path(lead): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // No lead id holds a NUL, and PostgreSQL would refuse the query.
    if lead.contains('\0') || !s.store.release(&lead, s.clock.now()).await? {
        return Err(ApiError::not_found("lead in quarantine"));
    }
    s.partitions.touch([s.store.part_of(&lead)]);
    Ok(Json(json!({ "lead": lead, "released": true })))
}
