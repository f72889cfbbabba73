//! Not hostile, but careless: answers with the effects its config names, as
//! raw JSON text the way the host receives them, so tests can send the
//! daemon what a buggy plugin might (tests/poison.rs):
//!
//! - `{"deep": N}`: set attribute `deep` to an array nested N levels deep;
//! - `{"reason": "..."}`: 1 point with that reason (a NUL, say);
//! - `{"quote_email": true}`: 1 point with a reason that quotes the lead's
//!   email, as a plugin explaining itself might (erasure must remove it).

use nurture_plugin::bindings::nurture::plugin::types::{Attribute, Effect, Event, Lead, Points};
use serde_json::Value;

struct P;

impl nurture_plugin::bindings::Guest for P {
    fn score(lead: Lead, _: Event, config: String) -> Result<Vec<Effect>, String> {
        let config: Value = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        let mut out = Vec::new();
        if let Some(n) = config.get("deep").and_then(Value::as_u64) {
            // Built as text: no recursion in the plugin, whatever the depth.
            let n = n as usize;
            out.push(Effect::SetAttribute(Attribute {
                key: "deep".into(),
                value: format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            }));
        }
        if let Some(reason) = config.get("reason").and_then(Value::as_str) {
            out.push(Effect::Points(Points {
                points: 1,
                reason: reason.into(),
            }));
        }
        if config.get("quote_email").and_then(Value::as_bool) == Some(true) {
            out.push(Effect::Points(Points {
                points: 1,
                reason: format!("scored {}", lead.email),
            }));
        }
        Ok(out)
    }
}

nurture_plugin::bindings::__export_scorer!(P with_types_in nurture_plugin::bindings);
