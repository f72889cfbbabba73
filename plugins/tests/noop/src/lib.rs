//! Not hostile: does nothing at all (no JSON parsing either), so a benchmark
//! of it measures the host's cost per call (engine/benches/plugins.rs).

use nurture_plugin::bindings::nurture::plugin::types::{Effect, Event, Lead};

struct P;

impl nurture_plugin::bindings::Guest for P {
    fn score(_: Lead, _: Event, _: String) -> Result<Vec<Effect>, String> {
        Ok(vec![])
    }
}

nurture_plugin::bindings::__export_scorer!(P with_types_in nurture_plugin::bindings);
