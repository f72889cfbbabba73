//! The rules in force: a ruleset with its plugins and templates ready
//! ([`Active`]), behind the handle that a reload replaces whole.

use crate::email::{Composer, Links};
use crate::rules::Ruleset;
use std::sync::{Arc, RwLock};

/// A ruleset with its plugins loaded and its templates ready.
pub struct Active {
    pub rules: Ruleset,
    pub plugins: Option<crate::plugins::Host>,
    pub composer: Composer,
}

impl Active {
    /// Loads the ruleset's plugins. A plugin that cannot be loaded is logged;
    /// its calls fail (and are recorded) while the other rules run.
    pub fn new(rules: Ruleset, links: &Links) -> anyhow::Result<Active> {
        let composer = Composer::new(&rules, links.clone());
        if rules.plugins.is_empty() {
            return Ok(Active {
                rules,
                plugins: None,
                composer,
            });
        }
        let host = crate::plugins::Host::new(&rules.plugins, crate::plugins::Options::default())
            .map_err(anyhow::Error::msg)?;
        for p in &rules.plugins {
            if let Some(e) = host.load_error(&p.name) {
                tracing::error!(plugin = %p.name, "{}: plugin cannot be loaded: {e}", p.wasm_at);
            }
        }
        Ok(Active {
            rules,
            plugins: Some(host),
            composer,
        })
    }

    pub fn evaluator(&self) -> crate::eval::Evaluator<'_> {
        crate::eval::Evaluator {
            rules: &self.rules,
            plugins: self
                .plugins
                .as_ref()
                .map(|h| h as &dyn crate::eval::PluginHost),
            explain: false,
        }
    }
}

/// The rules in force; replaced whole on reload.
#[derive(Clone)]
pub struct RulesHandle(Arc<RwLock<Arc<Active>>>);

impl RulesHandle {
    pub fn new(active: Active) -> Self {
        RulesHandle(Arc::new(RwLock::new(Arc::new(active))))
    }
    pub fn current(&self) -> Arc<Active> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    pub fn replace(&self, active: Active) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(active);
    }
}
