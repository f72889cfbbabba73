//! The WIT world (`plugins/wit/plugin.wit`) as Rust: generated bindings, the
//! lead and event lowered into it, and the plugin's answer checked and
//! lifted back into [`PluginEffect`]s. Nothing here runs WebAssembly.

use crate::eval::PluginEffect;
use crate::model::{Consent, Event, LeadState, Stage};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../plugins/wit",
        world: "scorer",
        // The lead and the event go in borrowed: no copy of their strings
        // on the way to the plugin's memory.
        ownership: Borrowing {
            duplicate_if_necessary: false
        },
    });
}

pub use bindings::nurture::plugin::host::{Host as HostImports, Level};
use bindings::nurture::plugin::types as wit;
pub use bindings::nurture::plugin::types::Host as TypesImports;
pub use bindings::{Scorer, ScorerPre};

/// The interface version the host implements, as plugins import it.
pub const INTERFACE: &str = "nurture:plugin@0.1.0";

/// At most this many effects per call.
pub const MAX_EFFECTS: usize = 256;
/// At most this many bytes of text (reasons, keys, JSON values, tags, the
/// error) per call.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The dynamic maps of a lead and an event as JSON text: the lowered lead
/// and event borrow it.
pub struct Json {
    attributes: String,
    properties: String,
    traits: String,
}

impl Json {
    pub fn new(l: &LeadState, e: &Event) -> Json {
        Json {
            attributes: json_object(&l.attributes),
            properties: json_object(&e.properties),
            traits: json_object(&e.traits),
        }
    }
}

pub fn lead<'a>(l: &'a LeadState, json: &'a Json) -> wit::Lead<'a> {
    wit::Lead {
        id: &l.id,
        email: &l.email,
        score: l.score,
        fit: l.fit,
        stage: match l.stage {
            Stage::Subscriber => wit::Stage::Subscriber,
            Stage::Lead => wit::Stage::Lead,
            Stage::Mql => wit::Stage::Mql,
            Stage::Sql => wit::Stage::Sql,
            Stage::Opportunity => wit::Stage::Opportunity,
            Stage::Customer => wit::Stage::Customer,
        },
        owner: l.owner.as_deref(),
        consent: match l.consent {
            Consent::Unknown => wit::Consent::Unknown,
            Consent::OptedIn => wit::Consent::OptedIn,
            Consent::OptedOut => wit::Consent::OptedOut,
        },
        attributes: &json.attributes,
        created_at: l.created_at.timestamp(),
        last_activity_at: l.last_activity_at.timestamp(),
    }
}

pub fn event<'a>(e: &'a Event, json: &'a Json) -> wit::Event<'a> {
    wit::Event {
        id: &e.id,
        kind: &e.kind,
        at: e.at.timestamp(),
        properties: &json.properties,
        traits: &json.traits,
    }
}

fn json_object(m: &serde_json::Map<String, serde_json::Value>) -> String {
    // Straight from the map: no clone into a `Value`, and no `Display`
    // adapter (a tenth of a call's host cost went there). Serializing a map
    // cannot fail; the empty object is the common case.
    if m.is_empty() {
        return "{}".to_string();
    }
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_string())
}

/// Checks a plugin's answer: size caps, attribute values that are JSON, no
/// empty keys or tags. Anything wrong fails the whole call (no effect).
pub fn effects(out: Result<Vec<wit::Effect>, String>) -> Result<Vec<PluginEffect>, String> {
    let effects = match out {
        Ok(e) => e,
        Err(msg) => {
            return Err(format!(
                "plugin returned an error: {}",
                truncate(&msg, 1024)
            ))
        }
    };
    if effects.len() > MAX_EFFECTS {
        return Err(format!(
            "output too large: {} effects (at most {MAX_EFFECTS})",
            effects.len()
        ));
    }
    let bytes: usize = effects
        .iter()
        .map(|e| match e {
            wit::Effect::Points(p) => p.reason.len(),
            wit::Effect::SetAttribute(a) => a.key.len() + a.value.len(),
            wit::Effect::Tag(t) => t.len(),
        })
        .sum();
    if bytes > MAX_OUTPUT_BYTES {
        return Err(format!(
            "output too large: {bytes} bytes of text (at most {MAX_OUTPUT_BYTES})"
        ));
    }
    effects
        .into_iter()
        .enumerate()
        .map(|(i, e)| match e {
            wit::Effect::Points(p) => Ok(PluginEffect::Points {
                points: p.points,
                reason: p.reason,
            }),
            wit::Effect::SetAttribute(a) => {
                if a.key.is_empty() {
                    return Err(format!("invalid output: effect {i}: empty attribute key"));
                }
                match serde_json::from_str(&a.value) {
                    Ok(value) => Ok(PluginEffect::SetAttribute { key: a.key, value }),
                    Err(e) => Err(format!(
                        "invalid output: effect {i}: attribute `{}`: value is not JSON ({e})",
                        truncate(&a.key, 64)
                    )),
                }
            }
            wit::Effect::Tag(t) if t.is_empty() => {
                Err(format!("invalid output: effect {i}: empty tag"))
            }
            wit::Effect::Tag(tag) => Ok(PluginEffect::Tag { tag }),
        })
        .collect()
}

/// An effect as a plugin's answer carries it, before the host checks it:
/// attribute values are still JSON text.
#[derive(Debug, Clone)]
pub enum RawEffect {
    Points { points: i64, reason: String },
    SetAttribute { key: String, value: String },
    Tag(String),
}

/// What the host makes of raw effects: the checks of [`effects`], for tests
/// and fuzzing of everything after the WebAssembly call.
pub fn lift(raw: Vec<RawEffect>) -> Result<Vec<PluginEffect>, String> {
    effects(Ok(raw
        .into_iter()
        .map(|r| match r {
            RawEffect::Points { points, reason } => {
                wit::Effect::Points(wit::Points { points, reason })
            }
            RawEffect::SetAttribute { key, value } => {
                wit::Effect::SetAttribute(wit::Attribute { key, value })
            }
            RawEffect::Tag(t) => wit::Effect::Tag(t),
        })
        .collect()))
}

pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
