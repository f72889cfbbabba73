//! `POST /v1/events`: one event or `{"batch": [...]}`. All items are checked
//! before any is stored; the answer is 202 once they are durable.

use super::AppState;
use super::{parse_body, ApiError};
use crate::model::time::Timestamp;
use crate::model::Event;
use crate::store::IngestError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = state.clock.now();
    let events = parse_events(&body, now)?;
    accept(&state, events, now).await
}

/// Parses a `POST /v1/events` body (one event or `{"batch": [...]}`) into
/// checked events, or the first problem with its field (`batch[3].lead`).
/// Pure: the handler and the fuzzer run the same code.
pub fn parse_events(body: &[u8], now: Timestamp) -> Result<Vec<Event>, ApiError> {
    let v = parse_body(body)?;
    let items: Vec<&Value> = match &v {
        Value::Object(m) if m.contains_key("batch") => match &m["batch"] {
            Value::Array(a) => a.iter().collect(),
            _ => return Err(ApiError::bad("batch", "must be a list of events")),
        },
        other => vec![other],
    };
    let batched = items.len() != 1 || v.get("batch").is_some();
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match Event::from_json(item, Some(now)) {
            Ok(e) => events.push(e),
            Err(e) => {
                let field = if batched {
                    format!("batch[{i}].{}", e.field)
                } else {
                    e.field.clone()
                };
                let err = ApiError::bad(field, e.message);
                return Err(if batched { err.at(i) } else { err });
            }
        }
    }
    Ok(events)
}

/// Stores checked events and answers 202 with what was new.
pub(crate) async fn accept(
    state: &AppState,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let total = events.len() as u64;
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
        state.wake.notify_one();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": inserted, "duplicates": total - inserted})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{parse_segment_batch, parse_segment_call};

    /// The event_parser fuzz target's property (fuzz/fuzz_targets), over its
    /// seeds and corpus, without the fuzzing toolchain: a refusal is a 400,
    /// and an accepted event reads back unchanged from its stored form. Its
    /// corpus holds numbers that changed when read back before serde_json's
    /// `float_roundtrip` (issue 14).
    #[test]
    fn fuzz_inputs_keep_the_event_parser_property() {
        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut inputs = 0;
        for dir in ["seeds/event_parser", "corpus/event_parser"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let mut parsed = vec![parse_events(&data, now), parse_segment_batch(&data, now)];
                for kind in ["identify", "track", "page"] {
                    parsed.push(parse_segment_call(kind, &data, now).map(|e| vec![e]));
                }
                for p in parsed {
                    match p {
                        Ok(events) => {
                            for e in events {
                                let stored = e.to_json().to_string();
                                let v: Value = serde_json::from_str(&stored).unwrap();
                                let back = Event::from_json(&v, None);
                                assert_eq!(back, Ok(e), "{}: stored as {stored}", path.display());
                            }
                        }
                        Err(err) => assert_eq!(err.status, 400, "{}", path.display()),
                    }
                }
                inputs += 1;
            }
        }
        assert!(inputs > 100, "{inputs} inputs");
    }
}
