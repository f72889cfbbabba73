//! Hostile plugin: recurses without end.
//!
//! Two ways, as WebAssembly has two stacks. Plain recursion (the default)
//! uses only WebAssembly's own call stack, which the host limits (512 KiB
//! of its stack): the call ends with `stack overflow`. With config
//! `{"buffer": true}` each frame also keeps a buffer whose address is
//! taken, which Rust puts on the plugin's stack in its linear memory (32 KiB,
//! plugins/.cargo/config.toml): that overflows first, runs off address 0,
//! and traps as an out-of-bounds access.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;

struct P;

#[inline(never)]
fn down(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    // Not a tail call, and not an accumulator LLVM could turn into a loop.
    down(n - 1).wrapping_mul(31) ^ n
}

#[inline(never)]
fn down_with_buffer(n: u64) -> u64 {
    // black_box takes the buffer's address: it must live in memory.
    let buf = std::hint::black_box([n as u8; 256]);
    if n == 0 {
        return u64::from(buf[0]);
    }
    down_with_buffer(n - 1).wrapping_mul(31) ^ u64::from(buf[17])
}

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, config: &Value) -> Result<Vec<Effect>, String> {
        let start = std::hint::black_box(u64::MAX);
        let n = if config["buffer"] == true {
            down_with_buffer(start)
        } else {
            down(start)
        };
        Ok(vec![Effect::points(n as i64 & 1, "unreachable")])
    }
}

nurture_plugin::export!(P);
