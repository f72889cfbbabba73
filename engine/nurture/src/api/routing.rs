//! Sales routing over HTTP: the claim pool, claims, and the per-owner report.
//!
//! A claim is decided by the evaluator like any other input: the handler
//! stores a `sales_claim` event through the normal ingest path, waits until
//! the processor applied it, and reads who owns the lead now. Events apply
//! in arrival order, so of many concurrent claims exactly one wins.

use super::ingest::accept;
use super::AppState;
use super::{parse_body, request_event_id, stored_lead, ApiError};
use crate::model::Event;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a claim waits for its decision before answering 503.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PoolQuery {
    /// The owner's id (routing.owners).
    #[serde(default)]
    owner: Option<String>,
}

/// The leads offered to an owner.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Pool {
    owner: String,
    leads: Vec<crate::store::PoolEntry>,
    /// Leads that need feedback before this owner may claim again.
    overdue: Vec<String>,
}

/// A claim.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // The handler reads the raw body, naming the field at fault.
pub struct ClaimIn {
    /// The owner claiming.
    owner: String,
    /// Makes a retry safe.
    id: Option<String>,
}

/// The owner named in a request, known to the rules in force.
fn known_owner(s: &AppState, owner: Option<&str>) -> Result<String, ApiError> {
    let owner = match owner {
        Some(o) if !o.is_empty() => o,
        _ => return Err(ApiError::bad("owner", "missing: the owner's id")),
    };
    if s.rules.current().rules.owner_index(owner).is_none() {
        return Err(ApiError::bad(
            "owner",
            format!("unknown owner {owner:?}; owners are listed under routing.owners"),
        ));
    }
    Ok(owner.to_string())
}

/// The owner's leads past the SLA without feedback (none without an SLA).
async fn overdue(s: &AppState, owner: &str) -> Result<Vec<String>, ApiError> {
    let Some(within) = s
        .rules
        .current()
        .rules
        .sla
        .as_ref()
        .map(|x| x.accept_within)
    else {
        return Ok(Vec::new());
    };
    Ok(s.store.overdue_leads(owner, within, s.clock.now()).await?)
}

/// `GET /v1/pool?owner=ID`: leads offered to the owner, summaries only.
#[utoipa::path(get, path = "/pool", tag = "routing", params(PoolQuery),
    responses(
        (status = 200, description = "The owner's pool.", body = Pool),
        (status = 400, description = "A missing or unknown owner.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn pool(
    State(s): State<AppState>,
    Query(q): Query<PoolQuery>,
) -> Result<Json<Pool>, ApiError> {
    let owner = known_owner(&s, q.owner.as_deref())?;
    let leads = s.store.pool(&owner).await?;
    let overdue = overdue(&s, &owner).await?;
    Ok(Json(Pool {
        owner,
        leads,
        overdue,
    }))
}

/// `POST /v1/leads/{id}/claim` with `{"owner": ID, "id"?}`: 200 with the
/// lead for the winner, 409 for everyone else, 403 while the owner owes
/// feedback on leads past the SLA.
#[utoipa::path(post, path = "/leads/{id}/claim", tag = "routing",
    params(("id" = String, Path, description = "The lead's id.")),
    request_body = ClaimIn,
    responses(
        (status = 200, description = "The claim won: the lead.", body = super::doc::LeadDetail),
        (status = 400, description = "A bad or unknown owner.", body = super::doc::ErrorBody),
        (status = 403, description = "The owner owes feedback on leads past the SLA.", body = super::doc::ErrorBody),
        (status = 404, description = "No such lead.", body = super::doc::ErrorBody),
        (status = 409, description = "Claimed by another, not offered, at capacity, or too late.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn claim(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v = parse_body(&body)?;
    if !v.is_object() {
        return Err(ApiError::bad("", "must be a JSON object"));
    }
    if v.get("owner").is_some_and(|o| !o.is_string()) {
        return Err(ApiError::bad("owner", "must be a string"));
    }
    if v.get("id").is_some_and(|o| !o.is_string()) {
        return Err(ApiError::bad("id", "must be a string"));
    }
    let owner = known_owner(&s, v.get("owner").and_then(Value::as_str))?;
    let lead = stored_lead(&s, &id).await?;
    // An offer with `claim_within` closes (a claim that won clears it).
    if let Some(due) = lead.claim_due.filter(|d| *d <= s.clock.now()) {
        return Err(conflict(&format!(
            "too late: the offer closed at {} (claim_within)",
            crate::model::time::format(&due)
        )));
    }
    match lead.owner.as_deref() {
        // A retry of a claim that won.
        Some(o) if o == owner => {
            return Ok((StatusCode::OK, Json(crate::view::lead_detail(&lead))));
        }
        Some(_) => return Err(conflict("the lead is already claimed")),
        None => {}
    }
    let late = overdue(&s, &owner).await?;
    if !late.is_empty() {
        let shown: Vec<&str> = late.iter().take(10).map(String::as_str).collect();
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{owner} has {} lead(s) past the SLA without feedback ({}{}); give feedback on them first",
                late.len(),
                shown.join(", "),
                if late.len() > shown.len() { ", ..." } else { "" }
            ),
        );
        e.field = Some("owner".into());
        return Err(e);
    }

    let now = s.clock.now();
    let event_id = request_event_id(&v, &format!("claim:{id}:{owner}"), now);
    let ev =
        json!({"id": event_id, "lead": id, "type": "sales_claim", "properties": {"owner": owner}});
    let e = Event::from_json(&ev, Some(now)).map_err(|e| ApiError::bad(e.field, e.message))?;
    // Stored (or already stored, for a retried `id`): now wait for the decision.
    let _ = accept(&s, vec![e], now).await?;

    // Another process on the same database may apply it: ask the database.
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        if s.store.event_applied(&event_id).await? == Some(true) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the claim is stored but not decided yet; GET the lead to see its owner",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lead = stored_lead(&s, &id).await?;
    match lead.owner.as_deref() {
        Some(o) if o == owner => Ok((StatusCode::OK, Json(crate::view::lead_detail(&lead)))),
        Some(_) => Err(conflict("the lead is already claimed")),
        None if !lead.offered_to.contains(&owner) => {
            Err(conflict("the lead is not offered to this owner"))
        }
        None => Err(conflict("the owner is at capacity")),
    }
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
}
