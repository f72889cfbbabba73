//! Hostile plugin: log spam: far more than the log budget, then a normal answer.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let long = "x".repeat(4096);
        for _ in 0..5_000 {
            nurture_plugin::log(nurture_plugin::Level::Info, &long);
        }
        Ok(vec![Effect::points(1, "spoke a lot")])
    }
}

nurture_plugin::export!(P);
