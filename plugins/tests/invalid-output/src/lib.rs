//! Hostile plugin: an attribute value that is not JSON, written with the raw
//! bindings (the SDK's types cannot express it).

use nurture_plugin::bindings::nurture::plugin::types::{Attribute, Effect, Event, Lead};

struct P;

impl nurture_plugin::bindings::Guest for P {
    fn score(_: Lead, _: Event, _: String) -> Result<Vec<Effect>, String> {
        Ok(vec![Effect::SetAttribute(Attribute {
            key: "size".into(),
            value: "{not json".into(),
        })])
    }
}

nurture_plugin::bindings::__export_scorer!(P with_types_in nurture_plugin::bindings);
