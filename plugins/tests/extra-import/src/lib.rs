//! Hostile plugin: built against a hand-edited copy of the interface
//! (`wit/plugin.wit`: `nurture:plugin/host@0.1.0` with an extra function
//! `now`, which the host does not have) and calls it on every event.

wit_bindgen::generate!({
    path: "wit",
    world: "scorer",
});

use nurture::plugin::host;
use nurture::plugin::types::Points;

struct P;

impl Guest for P {
    fn score(_: Lead, _: Event, _: String) -> Result<Vec<Effect>, String> {
        host::log(host::Level::Info, "asking the host for the time");
        Ok(vec![Effect::Points(Points {
            points: host::now() % 7,
            reason: "time-dependent".into(),
        })])
    }
}

export!(P);
