// The code of `leftovers` and `leftovers-large`; each sets BUFFER_BYTES.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};

static CALLS: AtomicU32 = AtomicU32::new(0);
static BUFFER: [AtomicU8; BUFFER_BYTES] = [const { AtomicU8::new(0) }; BUFFER_BYTES];

/// Pages of fresh memory each call grows and dirties.
const GROW_PAGES: usize = 4;
const PAGE: usize = 64 << 10;

struct P;

impl Plugin for P {
    type Config = Value;
    fn score(_: &Lead, _: &Event, _: &Value) -> Result<Vec<Effect>, String> {
        let calls = CALLS.fetch_add(1, Relaxed);
        if calls != 0 {
            return Err(format!("memory left over: {calls} earlier calls counted"));
        }
        for i in (0..BUFFER_BYTES).step_by(4096) {
            let b = BUFFER[i].swap(0xAB, Relaxed);
            if b != 0 {
                return Err(format!("memory left over: BUFFER[{i}] = {b:#x}"));
            }
        }
        let old = core::arch::wasm32::memory_grow(0, GROW_PAGES);
        if old == usize::MAX {
            return Err("cannot grow memory".into());
        }
        let base = (old * PAGE) as *mut u8;
        for i in (0..GROW_PAGES * PAGE).step_by(4096) {
            // SAFETY: these pages were just grown and nothing else uses them.
            let b = unsafe { base.add(i).read_volatile() };
            if b != 0 {
                return Err(format!("memory left over: grown byte {i} = {b:#x}"));
            }
            unsafe { base.add(i).write_volatile(0xCD) };
        }
        Ok(vec![Effect::points(1, "fresh memory")])
    }
}

nurture_plugin::export!(P);
