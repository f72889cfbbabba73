//! Reading leads, their timelines and the funnel; erasing a lead; sales
//! feedback.

use super::ingest::accept;
use super::AppState;
use super::{request_event_id, stored_lead, ApiError};
use crate::model::{Event, FeedbackStatus};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A lead: stage, scores and their breakdown, owner, consent, history.
#[utoipa::path(get, path = "/leads/{id}", tag = "leads", operation_id = "get_lead", params(("id" = String, Path, description = "The lead's id.")),
    responses(
        (status = 200, description = "The lead.", body = super::doc::LeadDetail),
        (status = 404, description = "No such lead.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead = stored_lead(&s, &id).await?;
    Ok(Json(crate::view::lead_detail(&lead)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// The `cursor` of the entry to continue after.
    #[serde(default)]
    after: Option<String>,
    /// Entries at most (1 to 5,000; default 500).
    #[serde(default)]
    limit: Option<i64>,
}

/// A lead's timeline, a page at a time.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Timeline {
    lead: String,
    entries: Vec<crate::store::TimelineEntry>,
}

/// Everything that happened to a lead, in order, with why.
#[utoipa::path(get, path = "/leads/{id}/timeline", tag = "leads",
    params(("id" = String, Path, description = "The lead's id."), TimelineQuery),
    responses(
        (status = 200, description = "A page of entries.", body = Timeline),
        (status = 400, description = "A bad cursor.", body = super::doc::ErrorBody),
        (status = 404, description = "No such lead.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn timeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    // Known, not read: the timeline of a lead whose state cannot be read
    // (in quarantine) says why. No lead id holds a NUL (see stored_lead).
    if id.contains('\0') || !s.store.lead_exists(&id).await? {
        return Err(ApiError::not_found("lead"));
    }
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let after = match q.after.as_deref() {
        None => crate::store::Place::START,
        Some(c) => crate::store::Place::parse(c)
            .ok_or_else(|| ApiError::bad("after", "not a cursor: pass the `cursor` of an entry"))?,
    };
    let entries = s.store.timeline(&id, after, limit).await?;
    Ok(Json(Timeline { lead: id, entries }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only leads in this stage (subscriber, lead, mql, sql, opportunity, customer).
    #[serde(default)]
    stage: Option<String>,
    /// Only leads of this owner.
    #[serde(default)]
    owner: Option<String>,
    /// Leads per page (1 to 1,000; default 100).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` of the page before.
    #[serde(default)]
    cursor: Option<String>,
}

/// Leads, a page at a time, optionally of one stage or owner.
#[utoipa::path(get, path = "/leads", tag = "leads", operation_id = "list_leads", params(ListQuery),
    responses(
        (status = 200, description = "A page of leads.", body = crate::store::LeadList),
        (status = 400, description = "A bad stage, limit or cursor.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<crate::store::LeadList>, ApiError> {
    if let Some(st) = q.stage.as_deref() {
        if crate::model::Stage::parse(st).is_none() {
            return Err(ApiError::bad(
                "stage",
                "one of subscriber, lead, mql, sql, opportunity, customer",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit", "between 1 and 1000"));
    }
    let page = s
        .store
        .list_leads(
            q.stage.as_deref(),
            q.owner.as_deref(),
            limit,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page))
}

/// Stages, and per owner: assignments, feedback, time to feedback, breaches.
#[utoipa::path(get, path = "/reports/funnel", tag = "reports",
    responses((status = 200, description = "The funnel.", body = super::doc::FunnelReport)),
    security(("api_token" = [])))]
pub async fn funnel(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut v = serde_json::to_value(s.store.funnel().await?).unwrap_or_default();
    let mut owners = s.store.owner_report().await?;
    // Owners in the rules with nothing yet are shown with zeros.
    for o in &s.rules.current().rules.owners {
        if !owners.iter().any(|f| f.owner == o.id) {
            owners.push(crate::store::OwnerFigures {
                owner: o.id.clone(),
                ..Default::default()
            });
        }
    }
    owners.sort_by(|a, b| a.owner.cmp(&b.owner));
    v["owners"] = serde_json::to_value(owners).unwrap_or_default();
    Ok(Json(v))
}

/// Erases a lead: its data and history, everywhere (SPEC section 6).
#[utoipa::path(delete, path = "/leads/{id}", tag = "leads", operation_id = "erase_lead", params(("id" = String, Path, description = "The lead's id.")),
    responses(
        (status = 204, description = "Erased."),
        (status = 404, description = "No such lead.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn erase(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.store.erase_lead(&id, s.clock.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("lead"))
    }
}

/// Sales feedback on a lead.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // The handler reads the raw body, naming the field at fault.
pub struct FeedbackIn {
    /// accepted, won, rejected or lost.
    status: String,
    reason: Option<String>,
    owner: Option<String>,
    /// Makes a retry safe: the same id is stored once.
    id: Option<String>,
}

/// `{"status": accepted|won|rejected|lost, "reason"?, "owner"?, "id"?}`: the
/// same as a `sales_feedback` event. `id` makes retries safe.
#[utoipa::path(post, path = "/leads/{id}/feedback", tag = "leads", params(("id" = String, Path, description = "The lead's id.")),
    request_body = FeedbackIn,
    responses(
        (status = 202, description = "Stored as a `sales_feedback` event.", body = super::ingest::Accepted),
        (status = 400, description = "A bad field.", body = super::doc::ErrorBody),
        (status = 404, description = "No such lead.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn feedback(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<super::ingest::Accepted>), ApiError> {
    let v = super::parse_body(&body)?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    if FeedbackStatus::parse(status).is_none() {
        return Err(ApiError::bad(
            "status",
            "must be \"accepted\", \"won\", \"rejected\" or \"lost\"",
        ));
    }
    for field in ["reason", "owner", "id"] {
        if v.get(field).is_some_and(|x| !x.is_string()) {
            return Err(ApiError::bad(field, "must be a string"));
        }
    }
    stored_lead(&s, &id).await?;
    let now = s.clock.now();
    let event_id = request_event_id(&v, &format!("feedback:{id}"), now);
    let mut props = serde_json::Map::new();
    for field in ["status", "reason", "owner"] {
        if let Some(x) = v.get(field) {
            props.insert(field.into(), x.clone());
        }
    }
    let ev = json!({"id": event_id, "lead": id, "type": "sales_feedback", "properties": props});
    let e = Event::from_json(&ev, Some(now)).map_err(|e| ApiError::bad(e.field, e.message))?;
    accept(&s, vec![e], now).await
}
