//! Hostile plugin: loops forever (ends by fuel or timeout).

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

nurture_plugin::export!(P);
