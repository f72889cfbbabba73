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

pub use crate::eval::answer::{lift, RawEffect, MAX_EFFECTS, MAX_OUTPUT_BYTES};
pub use crate::model::bounds::truncate;

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

/// Checks a plugin's answer ([`lift`]): anything wrong fails the whole call.
pub fn effects(out: Result<Vec<wit::Effect>, String>) -> Result<Vec<PluginEffect>, String> {
    let effects =
        out.map_err(|msg| format!("plugin returned an error: {}", truncate(&msg, 1024)))?;
    lift(
        effects
            .into_iter()
            .map(|e| match e {
                wit::Effect::Points(p) => RawEffect::Points {
                    points: p.points,
                    reason: p.reason,
                },
                wit::Effect::SetAttribute(a) => RawEffect::SetAttribute {
                    key: a.key,
                    value: a.value,
                },
                wit::Effect::Tag(t) => RawEffect::Tag(t),
            })
            .collect(),
    )
}

pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
