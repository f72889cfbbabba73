//! Example plugin: sizes a company from `attributes.employees`.
//!
//! Sets `attributes.company_size` to `small`, `mid_market` or `enterprise`
//! and, when a lead first becomes `enterprise`, gives `enterprise_points`.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// From this many employees on, a company is `enterprise`.
    enterprise_employees: f64,
    /// From this many, `mid_market`; below, `small`.
    mid_market_employees: f64,
    /// Points when a lead becomes `enterprise`.
    enterprise_points: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enterprise_employees: 1000.0,
            mid_market_employees: 100.0,
            enterprise_points: 10,
        }
    }
}

struct CompanySize;

impl Plugin for CompanySize {
    type Config = Config;

    fn score(lead: &Lead, _: &Event, config: &Config) -> Result<Vec<Effect>, String> {
        // Unknown or not a number: nothing to say.
        let Some(employees) = lead.attributes.get("employees").and_then(|v| v.as_f64()) else {
            return Ok(vec![]);
        };
        let size = if employees >= config.enterprise_employees {
            "enterprise"
        } else if employees >= config.mid_market_employees {
            "mid_market"
        } else {
            "small"
        };
        if lead.attributes.get("company_size").and_then(|v| v.as_str()) == Some(size) {
            return Ok(vec![]);
        }
        let mut effects = vec![Effect::set("company_size", size)];
        if size == "enterprise" && config.enterprise_points != 0 {
            effects.push(Effect::points(
                config.enterprise_points,
                format!("enterprise: {employees} employees"),
            ));
        }
        Ok(effects)
    }
}

nurture_plugin::export!(CompanySize);
