//! `nurture check` for plugins: each `wasm:` file must be a component that
//! exports the world and imports nothing the host does not give. (That the
//! file exists and the config is JSON is checked with the rules.)

use super::{Host, Options};
use crate::rules::{Diagnostic, Ruleset};

/// Loads every plugin as the daemon would (warming the compile cache) and
/// reports each that cannot be loaded, at its `wasm:` key.
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
        .filter_map(|p| {
            host.load_error(&p.name).map(|e| Diagnostic {
                message: format!("plugin `{}`: {}: {e}", p.name, p.wasm.display()),
                ..p.wasm_at.clone()
            })
        })
        .collect()
}
