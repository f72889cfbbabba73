//! Hostile plugin: allocates until something stops it.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Reserve a MiB at a time and touch one byte: memory grows fast
            // and cheaply, so this hits the memory limit, not the fuel limit.
            let mut chunk = Vec::with_capacity(1 << 20);
            chunk.push(1u8);
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

nurture_plugin::export!(P);
