//! Example plugin: a penalty for free-mail addresses.
//!
//! When an event brings an email address (`traits.email`) at a free-mail
//! domain, gives `penalty` points (negative) and tags the lead `free-mail`.

use nurture_plugin::{Effect, Event, Lead, Plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Points for a free-mail address; negative.
    penalty: i64,
    /// Domains that count as free mail (lower case).
    domains: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            penalty: -10,
            domains: [
                "gmail.com",
                "googlemail.com",
                "yahoo.com",
                "hotmail.com",
                "outlook.com",
                "live.com",
                "aol.com",
                "icloud.com",
                "gmx.de",
                "web.de",
                "proton.me",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

struct FreeMail;

impl Plugin for FreeMail {
    type Config = Config;

    fn score(_: &Lead, event: &Event, config: &Config) -> Result<Vec<Effect>, String> {
        let Some(email) = event.traits.get("email").and_then(|v| v.as_str()) else {
            return Ok(vec![]);
        };
        let domain = email.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
        if !config.domains.iter().any(|d| *d == domain) {
            return Ok(vec![]);
        }
        Ok(vec![
            Effect::points(config.penalty, format!("free-mail address ({domain})")),
            Effect::tag("free-mail"),
        ])
    }
}

nurture_plugin::export!(FreeMail);
