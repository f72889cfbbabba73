//! Leads in quarantine over HTTP (admin token): `GET /v1/quarantine` lists
//! them with their cause, `POST /v1/quarantine/{lead}/retry` releases one,
//! so that its waiting events are applied again. `nurture doctor` does the
//! same from the command line.

use super::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::Json;

/// Leads in quarantine, oldest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct QuarantineList {
    leads: Vec<crate::store::Quarantined>,
}

/// A lead released from quarantine.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Released {
    lead: String,
    released: bool,
}

/// Leads set aside by the processor, with their cause.
#[utoipa::path(get, path = "/quarantine", tag = "operations", operation_id = "list_quarantine",
    responses((status = 200, description = "The leads in quarantine.", body = QuarantineList)),
    security(("api_token" = [])))]
pub async fn list(State(s): State<AppState>) -> Result<Json<QuarantineList>, ApiError> {
    let leads = s.store.quarantined().await?;
    Ok(Json(QuarantineList { leads }))
}

/// Releases a lead from quarantine: its waiting events are applied again.
#[utoipa::path(post, path = "/quarantine/{lead}/retry", tag = "operations", operation_id = "retry_quarantined",
    params(("lead" = String, Path, description = "The lead's id.")),
    responses(
        (status = 200, description = "Released.", body = Released),
        (status = 404, description = "Not in quarantine.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn retry(
    State(s): State<AppState>,
    Path(lead): Path<String>,
) -> Result<Json<Released>, ApiError> {
    // No lead id holds a NUL, and PostgreSQL would refuse the query.
    if lead.contains('\0') || !s.store.release(&lead, s.clock.now()).await? {
        return Err(ApiError::not_found("lead in quarantine"));
    }
    s.partitions.touch([s.store.part_of(&lead)]);
    Ok(Json(Released {
        lead,
        released: true,
    }))
}
