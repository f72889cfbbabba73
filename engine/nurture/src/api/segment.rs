//! Segment-compatible ingestion: `identify`, `track`, `page` and `batch` map
//! onto Nurture events (`userId` → lead, `messageId` → id, `timestamp` → at,
//! `track`'s `event` → type, `page` → `page_viewed`).

use super::ingest::accept;
use super::AppState;
use super::{parse_body, ApiError};
use crate::model::time::Timestamp;
use crate::model::Event;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

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

/// Parses a Segment `batch` body into events, or the first problem with its
/// field. Pure, like [`super::ingest::parse_events`].
pub fn parse_batch(body: &[u8], now: Timestamp) -> Result<Vec<Event>, ApiError> {
    let v = parse_body(body)?;
    let Some(items) = v.get("batch").and_then(Value::as_array) else {
        return Err(ApiError::bad("batch", "must be a list of calls"));
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let e = to_event(kind, item, now)
            .map_err(|(f, m)| ApiError::bad(format!("batch[{i}].{f}"), m).at(i))?;
        events.push(e);
    }
    Ok(events)
}

/// Parses one Segment call (`identify`, `track` or `page`) into an event.
pub fn parse_call(kind: &str, body: &[u8], now: Timestamp) -> Result<Event, ApiError> {
    let v = parse_body(body)?;
    to_event(kind, &v, now).map_err(|(f, m)| ApiError::bad(f, m))
}

/// Maps one Segment call to an event, or names the Segment field at fault.
fn to_event(kind: &str, v: &Value, now: Timestamp) -> Result<Event, (String, String)> {
    let obj = v
        .as_object()
        .ok_or_else(|| (String::new(), "a call must be a JSON object".to_string()))?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (lead_field, lead) = text("userId")
        .map(|l| ("userId", l))
        .or_else(|| text("anonymousId").map(|l| ("anonymousId", l)))
        .ok_or_else(|| ("userId".to_string(), "missing (or anonymousId)".to_string()))?;
    let id = text("messageId").ok_or_else(|| ("messageId".to_string(), "missing".to_string()))?;
    let object = |k: &str| -> Result<Map<String, Value>, (String, String)> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err((k.to_string(), "must be a JSON object".to_string())),
        }
    };
    let mut out = json!({"id": id, "lead": lead});
    match kind {
        "identify" => {
            out["type"] = json!("identify");
            out["traits"] = Value::Object(object("traits")?);
        }
        "track" => {
            let name = text("event").ok_or_else(|| {
                (
                    "event".to_string(),
                    "missing: the name of what happened".to_string(),
                )
            })?;
            out["type"] = json!(name);
            out["properties"] = Value::Object(object("properties")?);
        }
        "page" => {
            let mut props = object("properties")?;
            if let Some(name) = text("name") {
                props.entry("name").or_insert_with(|| json!(name));
            }
            out["type"] = json!("page_viewed");
            out["properties"] = Value::Object(props);
        }
        other => {
            return Err((
                "type".to_string(),
                format!("unsupported call type {other:?}; use identify, track or page"),
            ))
        }
    }
    if let Some(ts) = obj.get("timestamp") {
        out["at"] = ts.clone();
    }
    Event::from_json(&out, Some(now)).map_err(|e| {
        let field = match e.field.as_str() {
            "at" => "timestamp".to_string(),
            "id" => "messageId".to_string(),
            "lead" => lead_field.to_string(),
            "type" if kind == "track" => "event".to_string(),
            other => other.to_string(),
        };
        (field, e.message)
    })
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
