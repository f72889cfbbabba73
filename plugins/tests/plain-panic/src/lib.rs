//! Hostile plugin: a plain std `panic!`, without the SDK's panic hook (it
//! implements the bindings directly, as a plugin written without the SDK
//! would). std's own hook reads the environment and writes the message to
//! stderr before the trap: the host must still report the panic message.

use nurture_plugin::bindings::nurture::plugin::types::{Effect, Event, Lead};

struct P;

impl nurture_plugin::bindings::Guest for P {
    fn score(lead: Lead, _: Event, _: String) -> Result<Vec<Effect>, String> {
        panic!("plain panic for {}", lead.id);
    }
}

nurture_plugin::bindings::__export_scorer!(P with_types_in nurture_plugin::bindings);
