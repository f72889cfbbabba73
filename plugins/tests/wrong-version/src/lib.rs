//! Hostile plugin: built against a hand-edited copy of the interface
//! (`wit/plugin.wit`: the same functions, but as `nurture:plugin@0.2.0`, a
//! version the host does not implement).

wit_bindgen::generate!({
    path: "wit",
    world: "scorer",
});

use nurture::plugin::host;
use nurture::plugin::types::Points;

struct P;

impl Guest for P {
    fn score(lead: Lead, _: Event, _: String) -> Result<Vec<Effect>, String> {
        host::log(host::Level::Info, "scoring");
        Ok(vec![Effect::Points(Points {
            points: 1,
            reason: format!("version 0.2.0 for {}", lead.id),
        })])
    }
}

export!(P);
