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
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead = stored_lead(&s, &id).await?;
    Ok(Json(crate::view::lead_detail(&lead)))
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

pub async fn timeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"lead": id, "entries": entries})))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

/// Stages, and per owner: assignments, feedback, time to feedback, breaches.
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

/// `{"status": accepted|won|rejected|lost, "reason"?, "owner"?, "id"?}`: the
/// same as a `sales_feedback` event. `id` makes retries safe.
pub async fn feedback(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
