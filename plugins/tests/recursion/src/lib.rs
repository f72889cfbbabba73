//! Hostile plugin: recurses without end.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

#[inline(never)]
fn down(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    // Not a tail call, and not an accumulator LLVM could turn into a loop.
    down(std::hint::black_box(n - 1)).wrapping_mul(31) ^ n
}

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let n = down(std::hint::black_box(u64::MAX));
        Ok(vec![Effect::points(n as i64 & 1, "unreachable")])
    }
}

nurture_plugin::export!(P);
