//! Hostile plugin: answers with far too many effects.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        Ok(vec![Effect::tag("t"); 10_000])
    }
}

nurture_plugin::export!(P);
