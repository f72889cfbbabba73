//! The JSON in which events arrive, parsed into checked [`Event`]s before
//! anything is stored: Nurture's own `POST /v1/events` body (one event or
//! `{"batch": [...]}`) and Segment's calls (`identify`, `track`, `page`,
//! `batch`: `userId` → lead, `messageId` → id, `timestamp` → at, `track`'s
//! `event` → type, `page` → `page_viewed`). Pure: the API's handlers and the
//! fuzz target run the same code.

use crate::model::time::Timestamp;
use crate::model::Event;
use serde_json::{json, Map, Value};

/// Why a body was refused: the field at fault (`batch[3].lead`, empty for
/// the body itself), and the item's index in a batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadInput {
    pub field: String,
    pub message: String,
    pub index: Option<usize>,
}

impl BadInput {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        BadInput {
            field: field.into(),
            message: message.into(),
            index: None,
        }
    }
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

/// A body as JSON, or where it stops being JSON.
pub fn parse_body(body: &[u8]) -> Result<Value, BadInput> {
    serde_json::from_slice(body).map_err(|e| {
        BadInput::new(
            "",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Parses a `POST /v1/events` body (one event or `{"batch": [...]}`) into
/// checked events, or the first problem with its field (`batch[3].lead`).
pub fn parse_events(body: &[u8], now: Timestamp) -> Result<Vec<Event>, BadInput> {
    let v = parse_body(body)?;
    let items: Vec<&Value> = match &v {
        Value::Object(m) if m.contains_key("batch") => match &m["batch"] {
            Value::Array(a) => a.iter().collect(),
            _ => return Err(BadInput::new("batch", "must be a list of events")),
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
                let err = BadInput::new(field, e.message);
                return Err(if batched { err.at(i) } else { err });
            }
        }
    }
    Ok(events)
}

/// Parses a Segment `batch` body into events, or the first problem with its
/// field.
pub fn parse_segment_batch(body: &[u8], now: Timestamp) -> Result<Vec<Event>, BadInput> {
    let v = parse_body(body)?;
    let Some(items) = v.get("batch").and_then(Value::as_array) else {
        return Err(BadInput::new("batch", "must be a list of calls"));
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let e = to_event(kind, item, now)
            .map_err(|(f, m)| BadInput::new(format!("batch[{i}].{f}"), m).at(i))?;
        events.push(e);
    }
    Ok(events)
}

/// Parses one Segment call (`identify`, `track` or `page`) into an event.
pub fn parse_segment_call(kind: &str, body: &[u8], now: Timestamp) -> Result<Event, BadInput> {
    let v = parse_body(body)?;
    to_event(kind, &v, now).map_err(|(f, m)| BadInput::new(f, m))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The event_parser fuzz target's property (fuzz/fuzz_targets), over its
    /// seeds and corpus, without the fuzzing toolchain: a refusal says why,
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
                        Err(err) => assert!(!err.message.trim().is_empty(), "{}", path.display()),
                    }
                }
                inputs += 1;
            }
        }
        assert!(inputs > 100, "{inputs} inputs");
    }
}
