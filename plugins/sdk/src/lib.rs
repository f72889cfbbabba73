//! Write a Nurture scoring plugin in a few lines.
//!
//! ```ignore
//! use nurture_plugin::{Effect, Event, Lead, Plugin};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     type Config = serde_json::Value;
//!     fn score(lead: &Lead, event: &Event, _: &Self::Config) -> Result<Vec<Effect>, String> {
//!         Ok(vec![Effect::points(1, format!("{} for {}", event.kind, lead.id))])
//!     }
//! }
//!
//! nurture_plugin::export!(Hello);
//! ```
//!
//! The crate is a `cdylib` built for `wasm32-wasip2`; see docs/plugins.md.
//! Here live the bindings of the WIT world (`plugins/wit/plugin.wit`), the
//! JSON decoding of the dynamic maps, and the glue the [`export!`] macro
//! expands to. Nothing here may need WASI: a plugin gets no clock,
//! randomness, files or network.

// The generated bindings name this crate by its path, from inside and out.
extern crate self as nurture_plugin;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scorer",
        pub_export_macro: true,
        export_macro_name: "__export_scorer",
        default_bindings_module: "nurture_plugin::bindings",
        runtime_path: "nurture_plugin::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use bindings::nurture::plugin::host;
pub use bindings::nurture::plugin::types::{Consent, Stage};
use bindings::nurture::plugin::types::{self as wit};

/// The lead as it is when the plugin runs: after the event's traits and the
/// scoring rules, before fit and stages.
#[derive(Debug, Clone)]
pub struct Lead {
    pub id: String,
    /// `""` until known.
    pub email: String,
    pub score: i64,
    pub fit: i64,
    pub stage: Stage,
    pub owner: Option<String>,
    pub consent: Consent,
    pub attributes: Map<String, Value>,
    /// Seconds since the Unix epoch (UTC).
    pub created_at: i64,
    pub last_activity_at: i64,
}

/// The event being applied.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    /// The event type: `identify`, `page_viewed`, ...
    pub kind: String,
    /// Seconds since the Unix epoch (UTC).
    pub at: i64,
    pub properties: Map<String, Value>,
    pub traits: Map<String, Value>,
}

/// What a plugin decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Points (negative takes away) with the reason shown in the ledger.
    Points { points: i64, reason: String },
    /// Set a top-level attribute of the lead.
    SetAttribute { key: String, value: Value },
    /// Add a tag to `attributes.tags` (once).
    Tag(String),
}

impl Effect {
    pub fn points(points: i64, reason: impl Into<String>) -> Effect {
        Effect::Points {
            points,
            reason: reason.into(),
        }
    }

    pub fn set(key: impl Into<String>, value: impl Into<Value>) -> Effect {
        Effect::SetAttribute {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn tag(tag: impl Into<String>) -> Effect {
        Effect::Tag(tag.into())
    }
}

/// A scoring plugin. `Config` is deserialized from the plugin's `config:` in
/// the rules (use `serde_json::Value` to take anything); a config that does
/// not fit is an error of the call.
pub trait Plugin {
    type Config: DeserializeOwned;

    fn score(lead: &Lead, event: &Event, config: &Self::Config) -> Result<Vec<Effect>, String>;
}

/// Writes to the host's log. Bounded per call: long messages are cut and,
/// past a budget, dropped (docs/plugins.md).
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

pub use host::Level;

/// Exports a [`Plugin`] as the component's `score` function.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __NurturePluginExport;

        impl $crate::bindings::Guest for __NurturePluginExport {
            fn score(
                lead: $crate::bindings::nurture::plugin::types::Lead,
                event: $crate::bindings::nurture::plugin::types::Event,
                config: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::bindings::nurture::plugin::types::Effect>,
                ::std::string::String,
            > {
                $crate::__run::<$plugin>(lead, event, config)
            }
        }

        $crate::bindings::__export_scorer!(__NurturePluginExport with_types_in $crate::bindings);
    };
}

fn object(what: &str, json: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{what}: not a JSON object")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

#[doc(hidden)]
pub fn __run<P: Plugin>(
    lead: wit::Lead,
    event: wit::Event,
    config: String,
) -> Result<Vec<wit::Effect>, String> {
    install_panic_hook();
    let config: P::Config =
        serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
    let lead = Lead {
        attributes: object("lead.attributes", &lead.attributes)?,
        id: lead.id,
        email: lead.email,
        score: lead.score,
        fit: lead.fit,
        stage: lead.stage,
        owner: lead.owner,
        consent: lead.consent,
        created_at: lead.created_at,
        last_activity_at: lead.last_activity_at,
    };
    let event = Event {
        properties: object("event.properties", &event.properties)?,
        traits: object("event.traits", &event.traits)?,
        id: event.id,
        kind: event.kind,
        at: event.at,
    };
    let effects = P::score(&lead, &event, &config)?;
    Ok(effects
        .into_iter()
        .map(|e| match e {
            Effect::Points { points, reason } => wit::Effect::Points(wit::Points { points, reason }),
            Effect::SetAttribute { key, value } => wit::Effect::SetAttribute(wit::Attribute {
                key,
                value: value.to_string(),
            }),
            Effect::Tag(t) => wit::Effect::Tag(t),
        })
        .collect())
}

/// A panic becomes a trap (the host reports it); the message goes to the
/// log first, so the developer sees where.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(Level::Error, &format!("plugin panicked: {info}"));
        }));
    });
}
