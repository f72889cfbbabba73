//! `nurture check` for plugins: each `wasm:` file must be a component that
//! exports the world and imports nothing the host does not give, and must
//! take its `config` (asked once). (That the file exists and the config is
//! JSON is checked with the rules.)

use super::{Host, Options};
use crate::model::{time, Event, LeadState};
use crate::rules::{Diagnostic, Plugin, Ruleset};

/// Loads every plugin as the daemon would (warming the compile cache) and
/// reports each that cannot be loaded, at its `wasm:` key, and each that
/// refuses its config, at its `config:` key.
pub fn check(rules: &Ruleset, opts: Options) -> Vec<Diagnostic> {
    if rules.plugins.is_empty() {
        return vec![];
    }
    let host = match Host::new(&rules.plugins, opts) {
        Ok(h) => h,
        Err(e) => {
            return rules
                .plugins
                .iter()
                .take(1)
                .map(|p| Diagnostic {
                    message: format!("plugin `{}`: {e}", p.name),
                    ..p.wasm_at.clone()
                })
                .collect()
        }
    };
    rules
        .plugins
        .iter()
        .filter_map(|p| match host.load_error(&p.name) {
            Some(e) => Some(Diagnostic {
                message: format!("plugin `{}`: {}: {e}", p.name, p.wasm.display()),
                ..p.wasm_at.clone()
            }),
            None => config_refused(&host, p).map(|e| Diagnostic {
                message: format!("plugin `{}`: its config is refused: {e}", p.name),
                ..p.config_at.clone()
            }),
        })
        .collect()
}

/// Asks a plugin once, with an empty lead and an event of a type it is
/// called for, whether it takes its config: one built with the SDK reads
/// its config before anything else and answers `config: ...` when the
/// config does not fit its type (a misspelt key, a number as text), which
/// would otherwise fail every call at run time. Other answers, even
/// failures, are the plugin's business with real leads.
fn config_refused(host: &Host, p: &Plugin) -> Option<String> {
    let kind =
        p.on.iter()
            .find(|k| *k != "*")
            .map_or("identify", String::as_str);
    let at = time::from_millis(0);
    let event = Event {
        id: "nurture-check".into(),
        lead: "nurture-check".into(),
        kind: kind.to_string(),
        at,
        properties: Default::default(),
        traits: Default::default(),
        imported: None,
    };
    let lead = LeadState::new("nurture-check", at);
    let message = host.call_report(p, &lead, &event).result.err()?;
    let refused = message.strip_prefix("plugin returned an error: config: ")?;
    // serde_json's place is in the JSON the host made from the YAML: no
    // help to whoever wrote the YAML.
    let refused = match refused.rfind(" at line ") {
        Some(i) if refused[i..].contains(" column ") => &refused[..i],
        _ => refused,
    };
    Some(refused.to_string())
}
