//! Hostile plugin: reads the clock, which Nurture does not give plugins.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(vec![Effect::points((now % 7) as i64, "time-dependent")])
    }
}

nurture_plugin::export!(P);
