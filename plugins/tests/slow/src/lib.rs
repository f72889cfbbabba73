//! Not hostile, just slow: spins `spin` rounds (from its config) before it
//! answers with 1 point, so a test can hold a call in flight for as long as
//! its timeout allows and check that the daemon goes on meanwhile
//! (tests/poison.rs: intake does not wait for plugins).

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    spin: u64,
}

struct P;

impl Plugin for P {
    type Config = Config;
    fn score(_: &Lead, _: &Event, config: &Config) -> Result<Vec<Effect>, String> {
        let mut n: u64 = 0;
        for _ in 0..config.spin {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        Ok(vec![Effect::points(1, format!("slow: {n} rounds"))])
    }
}

nurture_plugin::export!(P);
