//! Events as they arrive (JSON), checked field by field, and bounded
//! ([`super::bounds`]) so that whatever is accepted can be stored and read back.

use super::bounds::{self, BoundsError};
use super::time::{self, Timestamp};
use serde_json::{Map, Value};

/// A lead event. `kind` is the JSON `type`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    pub lead: String,
    pub kind: String,
    pub at: Timestamp,
    pub properties: Map<String, Value>,
    pub traits: Map<String, Value>,
    /// When an import brought it (`POST /v1/events?import=true`, `nurture
    /// import`): history moving in, whose emails, notices and webhooks due
    /// by then are recorded but not sent. Not a field clients can send:
    /// only the stored form carries it.
    pub imported: Option<Timestamp>,
}

/// What is wrong with an event, naming the JSON field (none when the
/// event as a whole is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("`{field}`: ") })]
pub struct EventError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> EventError {
    EventError {
        field: field.to_string(),
        message: message.into(),
    }
}

impl From<BoundsError> for EventError {
    fn from(e: BoundsError) -> Self {
        EventError {
            field: e.path,
            message: e.problem.to_string(),
        }
    }
}

/// Sales' answer in a `sales_feedback` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackStatus {
    Accepted,
    Won,
    Rejected,
    Lost,
}

impl FeedbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Accepted => "accepted",
            FeedbackStatus::Won => "won",
            FeedbackStatus::Rejected => "rejected",
            FeedbackStatus::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<FeedbackStatus> {
        Some(match s {
            "accepted" => FeedbackStatus::Accepted,
            "won" => FeedbackStatus::Won,
            "rejected" => FeedbackStatus::Rejected,
            "lost" => FeedbackStatus::Lost,
            _ => return None,
        })
    }
}

/// Sets consent to `opted_out`, as the unsubscribe link does (which sends it).
pub const UNSUBSCRIBED: &str = "unsubscribed";

/// Sets consent to `opted_in`; `properties.source` says how it was given.
pub const SUBSCRIBED: &str = "subscribed";

/// Event types the engine acts on without a rule (`identify` by convention
/// carries traits, which every event may; `email_bounced` is the sender's):
/// `nurture check --events` does not ask a rule to read them.
pub const BUILT_IN_TYPES: [&str; 6] = [
    "identify",
    "sales_feedback",
    "sales_claim",
    UNSUBSCRIBED,
    SUBSCRIBED,
    "email_bounced",
];

const KNOWN_FIELDS: [&str; 6] = ["id", "lead", "type", "at", "properties", "traits"];

impl Event {
    /// Reads one event. `default_at` stands in for a missing `at` (the time of
    /// receipt); without one, `at` is required.
    pub fn from_json(v: &Value, default_at: Option<Timestamp>) -> Result<Event, EventError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err("", "an event must be a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("unknown field; an event has {}", KNOWN_FIELDS.join(", ")),
            ));
        }
        let id = required_string(obj, "id")?;
        let lead = required_string(obj, "lead")?;
        let kind = required_string(obj, "type")?;
        let at = match obj.get("at") {
            None | Some(Value::Null) => default_at
                .ok_or_else(|| err("at", "missing (an RFC 3339 time is required here)"))?,
            Some(Value::String(s)) => time::parse(s)
                .map_err(|e| err("at", format!("not an RFC 3339 time ({e}): {s:?}")))?,
            Some(_) => return Err(err("at", "must be an RFC 3339 time string")),
        };
        let properties = optional_object(obj, "properties")?;
        let traits = optional_object(obj, "traits")?;
        // Nesting, size and NUL: a value the database or serde_json cannot
        // take back would otherwise fail the write (and other clients' writes
        // in the same group commit) or make the lead unreadable later.
        bounds::check_object("properties", &properties)?;
        bounds::check_object("traits", &traits)?;
        if let Some(c) = traits.get("consent") {
            if c.as_str().and_then(super::Consent::parse).is_none() {
                return Err(err(
                    "traits.consent",
                    "must be \"unknown\", \"opted_in\" or \"opted_out\"",
                ));
            }
        }
        match traits.get("email") {
            None | Some(Value::Null) => {}
            // Kept in a column of its own, and used as an address.
            Some(Value::String(e)) => bounds::check_text("traits.email", e, bounds::MAX_ID_BYTES)?,
            Some(_) => return Err(err("traits.email", "must be a string")),
        }
        if kind == "sales_feedback" {
            let status = properties.get("status").and_then(Value::as_str);
            if status.and_then(FeedbackStatus::parse).is_none() {
                return Err(err(
                    "properties.status",
                    "must be \"accepted\", \"won\", \"rejected\" or \"lost\"",
                ));
            }
        }
        let owner = properties.get("owner").and_then(Value::as_str);
        if kind == "sales_claim" && owner.is_none_or(str::is_empty) {
            return Err(err(
                "properties.owner",
                "must name the owner who claims the lead",
            ));
        }
        // Consent given is consent that can be shown later: say how.
        let source = properties.get("source").and_then(Value::as_str);
        if kind == SUBSCRIBED && source.is_none_or(|s| s.trim().is_empty()) {
            return Err(err(
                "properties.source",
                "must say how consent was given (e.g. \"signup_form\", \"double_opt_in\")",
            ));
        }
        Ok(Event {
            id,
            lead,
            kind,
            at,
            properties,
            traits,
            imported: None,
        })
    }

    /// Reads an event as [`Event::to_json`] stored it: as it arrived, plus
    /// whether an import brought it.
    pub fn from_stored(v: &Value) -> Result<Event, EventError> {
        let Some(stamp) = v.get(IMPORTED) else {
            // Most events were not imported: parsed as they are, no copy.
            return Event::from_json(v, None);
        };
        let imported = stamp.as_str().map(time::parse);
        let mut plain = v.clone();
        if let Some(obj) = plain.as_object_mut() {
            obj.remove(IMPORTED);
        }
        let mut event = Event::from_json(&plain, None)?;
        event.imported = match imported {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => return Err(err(IMPORTED, format!("not an RFC 3339 time ({e})"))),
        };
        Ok(event)
    }

    /// The status of a `sales_feedback` event.
    pub fn feedback(&self) -> Option<FeedbackStatus> {
        if self.kind != "sales_feedback" {
            return None;
        }
        self.properties
            .get("status")
            .and_then(Value::as_str)
            .and_then(FeedbackStatus::parse)
    }

    /// The owner of a `sales_claim` event.
    pub fn claimant(&self) -> Option<&str> {
        if self.kind != "sales_claim" {
            return None;
        }
        self.properties.get("owner").and_then(Value::as_str)
    }

    /// The event as JSON, in the shape it arrived (and, for an imported
    /// one, when it was imported): what the store keeps.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("lead".into(), Value::String(self.lead.clone()));
        m.insert("type".into(), Value::String(self.kind.clone()));
        m.insert("at".into(), Value::String(time::format(&self.at)));
        if !self.properties.is_empty() {
            m.insert("properties".into(), Value::Object(self.properties.clone()));
        }
        if !self.traits.is_empty() {
            m.insert("traits".into(), Value::Object(self.traits.clone()));
        }
        if let Some(t) = &self.imported {
            m.insert(IMPORTED.into(), Value::String(time::format(t)));
        }
        Value::Object(m)
    }
}

/// The stored form's key for [`Event::imported`].
const IMPORTED: &str = "imported_at";

/// An identifier (`id`, `lead`, `type`): a non-empty string of at most
/// [`bounds::MAX_ID_BYTES`] without NUL; ids and leads may be numbers.
fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, EventError> {
    let s = match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(err(field, "must not be empty")),
        Some(Value::Number(n)) if field != "type" => n.to_string(),
        Some(_) => return Err(err(field, "must be a string")),
        None => return Err(err(field, "missing")),
    };
    bounds::check_text(field, &s, bounds::MAX_ID_BYTES)?;
    Ok(s)
}

fn optional_object(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(err(field, "must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by fuzzing: a time with a fraction was stored as whole seconds,
    /// so the event applied after a restart was not the one acknowledged.
    #[test]
    fn reads_back_unchanged_from_its_stored_form() {
        for at in [
            "2026-01-05T08:00:00Z",
            "2026-01-05T08:00:00.5Z",
            "2026-01-05T08:00:00.123456789+02:00",
        ] {
            let e = Event::from_json(
                &json!({"id":"e1","lead":"u1","type":"x","at":at,"properties":{"n":1.25}}),
                None,
            )
            .unwrap();
            let stored: Value = serde_json::from_str(&e.to_json().to_string()).unwrap();
            assert_eq!(Event::from_json(&stored, None).unwrap(), e, "{at}");
        }
        // Whole seconds keep their short form.
        let e = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"x","at":"2026-01-05T08:00:00.000Z"}),
            None,
        )
        .unwrap();
        assert_eq!(e.to_json()["at"], "2026-01-05T08:00:00Z");
    }

    #[test]
    fn names_the_bad_field() {
        let e = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"x","at":"yesterday"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "at");
        let e = Event::from_json(&json!({"id":"e1","lead":"u1","type":""}), None).unwrap_err();
        assert_eq!(e.field, "type");
        let e = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"identify","at":"2026-01-01T00:00:00Z","traits":{"consent":"yes"}}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "traits.consent");
        let e = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"sales_feedback","at":"2026-01-01T00:00:00Z"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "properties.status");
        let e = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"x","at":"2026-01-01T00:00:00Z","colour":1}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "colour");
    }

    /// Issue 14: a NUL in an identifier was stored by SQLite and refused by
    /// PostgreSQL only when written (503, failing the whole group commit),
    /// and a trait nested 127 deep made the lead's state unreadable.
    #[test]
    fn values_that_cannot_be_stored_are_refused_with_the_field() {
        let at = "2026-01-01T00:00:00Z";
        for field in ["id", "lead", "type"] {
            let mut ev = json!({"id": "e1", "lead": "u1", "type": "x", "at": at});
            ev[field] = json!("a\u{0}b");
            let e = Event::from_json(&ev, None).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains("NUL"), "{e}");
            ev[field] = json!("x".repeat(bounds::MAX_ID_BYTES + 1));
            assert_eq!(Event::from_json(&ev, None).unwrap_err().field, field);
        }
        let deep = (0..127).fold(json!(1), |v, _| json!({ "a": v }));
        let e = Event::from_json(
            &json!({"id": "e1", "lead": "u1", "type": "x", "at": at, "traits": {"deep": deep}}),
            None,
        )
        .unwrap_err();
        assert!(e.field.starts_with("traits.deep.a"), "{e}");
        assert!(e.message.contains("nested"), "{e}");
        let cases = [
            (
                json!({"properties": {"p": ["ok", "n\u{0}"]}}),
                "properties.p[1]",
            ),
            (json!({"properties": {"k\u{0}": 1}}), "properties.k\u{0}"),
            (json!({"traits": {"email": "a\u{0}@x.io"}}), "traits.email"),
            (
                json!({"traits": {"email": format!("{}@x.io", "a".repeat(bounds::MAX_ID_BYTES))}}),
                "traits.email",
            ),
        ];
        for (extra, field) in cases {
            let mut ev = json!({"id": "e1", "lead": "u1", "type": "x", "at": at});
            for (k, v) in extra.as_object().unwrap() {
                ev[k] = v.clone();
            }
            assert_eq!(
                Event::from_json(&ev, None).unwrap_err().field,
                field,
                "{ev}"
            );
        }
    }

    /// Issue 14: numbers are parsed correctly rounded (serde_json's
    /// `float_roundtrip`), so what is stored is the double that was sent and
    /// it reads back as the same double.
    #[test]
    fn numbers_are_read_correctly_rounded_and_read_back_unchanged() {
        let tie = "1.00000000000000011102230246251565404236316680908203125";
        // 124 digits; without float_roundtrip the first reads as the next
        // double up, the second changes when its stored form is read back.
        let big = "4685850177548659716638049837986427983580696659917340626421905468427472780481961517028216494383354118578802484593686274953493";
        let body = format!(
            r#"{{"id":"e1","lead":"u1","type":"x","at":"2026-01-01T00:00:00Z","properties":{{"tie":{tie},"big":{big}}}}}"#
        );
        let e = Event::from_json(&serde_json::from_str(&body).unwrap(), None).unwrap();
        let exact = |t: &str| t.parse::<f64>().unwrap().to_bits();
        let got = |e: &Event, k: &str| e.properties[k].as_f64().unwrap().to_bits();
        assert_eq!(got(&e, "tie"), exact(tie));
        assert_eq!(got(&e, "big"), exact(big));
        let stored: Value = serde_json::from_str(&e.to_json().to_string()).unwrap();
        let back = Event::from_json(&stored, None).unwrap();
        assert_eq!(
            (got(&back, "tie"), got(&back, "big")),
            (exact(tie), exact(big))
        );
    }

    #[test]
    fn missing_at_takes_the_receipt_time() {
        let now = time::parse("2026-01-01T00:00:00Z").unwrap();
        let e = Event::from_json(&json!({"id":"e1","lead":"u1","type":"x"}), Some(now)).unwrap();
        assert_eq!(e.at, now);
        assert_eq!(
            Event::from_json(&json!({"id":"e1","lead":"u1","type":"x"}), None)
                .unwrap_err()
                .field,
            "at"
        );
    }
}
