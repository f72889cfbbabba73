//! Hostile plugin: panics (a trap), but only for leads whose attributes say so.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(lead: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        if lead.attributes.get("boom") == Some(&Value::Bool(true)) {
            panic!("boom for {}", lead.id);
        }
        Ok(vec![Effect::points(1, "no boom")])
    }
}

nurture_plugin::export!(P);
