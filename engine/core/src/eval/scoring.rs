//! Steps 2–5 of SPEC section 3: traits, scoring rules with limits, plugins,
//! and fit.

use super::{Note, PluginEffect, Run};
use crate::cel as cond;
use crate::model::{bounds, Consent, Event, LedgerEntry, SUBSCRIBED, UNSUBSCRIBED};
use crate::rules::config::WebhookEvent;
use serde_json::Value;

/// The event type the mail sender records when a message bounces.
pub const BOUNCED: &str = "email_bounced";

impl Run<'_, '_> {
    /// Traits merge into attributes (`null` deletes); `email` and `consent`
    /// also set those fields; `unsubscribed` / `subscribed` events set consent.
    pub(super) fn merge_traits(&mut self, ev: &Event) {
        let before = self.lead.consent;
        for (k, v) in &ev.traits {
            if v.is_null() {
                self.lead.attributes.remove(k);
            } else {
                let v = self.attribute_value(k, v.clone());
                self.lead.attributes.insert(k.clone(), v);
            }
            match (k.as_str(), v) {
                ("email", Value::String(e)) => {
                    if *e != self.lead.email {
                        self.lead.undeliverable = false;
                    }
                    self.lead.email = e.clone();
                }
                ("email", Value::Null) => {
                    self.lead.email.clear();
                    self.lead.undeliverable = false;
                }
                ("consent", Value::String(c)) => {
                    // Checked when the event was read.
                    if let Some(c) = Consent::parse(c) {
                        self.lead.consent = c;
                    }
                }
                _ => {}
            }
        }
        // Consent events set consent whatever their traits say, as the
        // unsubscribe link does; a client can send them too.
        let consent_event = match ev.kind.as_str() {
            UNSUBSCRIBED => Some(Consent::OptedOut),
            SUBSCRIBED => Some(Consent::OptedIn),
            _ => None,
        };
        if let Some(c) = consent_event {
            self.lead.consent = c;
        }
        // A hard bounce (the SMTP server refused the address for good)
        // suppresses marketing mail to this address.
        if ev.kind == BOUNCED && ev.properties.get("bounce").and_then(Value::as_str) != Some("soft")
        {
            self.lead.undeliverable = true;
        }
        // Out-of-order events never move activity back in time.
        if ev.at > self.lead.last_activity_at {
            self.lead.last_activity_at = ev.at;
        }
        if before != Consent::OptedOut && self.lead.consent == Consent::OptedOut {
            self.webhook(WebhookEvent::Unsubscribed, Default::default());
        }
        let mut changed = cond::fields::LAST_ACTIVITY_AT;
        if !ev.traits.is_empty() {
            changed |= cond::fields::ATTRIBUTES | cond::fields::EMAIL | cond::fields::CONSENT;
        }
        if consent_event.is_some() {
            changed |= cond::fields::CONSENT;
        }
        self.touched(changed);
    }

    /// An attribute's value as stored: a key of `settings.numbers` sent as
    /// text that reads as a number becomes that number.
    fn attribute_value(&self, key: &str, v: Value) -> Value {
        let numbers = &self.rules.settings.numbers;
        match &v {
            Value::String(s) if numbers.iter().any(|n| n == key) => {
                number_from_text(s).map_or(v, Value::Number)
            }
            _ => v,
        }
    }

    pub(super) fn score_event(&mut self, ev: &Event) {
        for &i in self.rules.scoring_for(&ev.kind) {
            self.apply_rule(i, Some(&ev.id));
        }
    }

    /// Applies scoring rule `i` once if its condition holds and its limit allows.
    pub(super) fn apply_rule(&mut self, i: usize, event: Option<&str>) {
        let rule = &self.rules.scoring[i];
        if let Some((times, per)) = rule.limit {
            let from = per.map(|p| self.now - p);
            let used = self
                .lead
                .memory
                .hits_within(&rule.name, from.as_ref(), &self.now);
            if used >= times as usize {
                if self.ev.explain && rule.condition.as_ref().is_none_or(|c| self.holds(c)) {
                    let per = per.map(|p| crate::model::time::format_span(&p));
                    let rule = rule.name.clone();
                    self.note(Note::LimitReached { rule, times, per });
                }
                return;
            }
        }
        if let Some(c) = &rule.condition {
            if !self.holds(c) {
                return;
            }
        }
        self.add_points(&rule.name, rule.points, event.map(str::to_string), None);
        if let Some((times, _)) = rule.limit {
            self.lead.memory.hit(&rule.name, &self.now, times);
        }
    }

    pub(super) fn add_points(
        &mut self,
        rule: &str,
        points: i64,
        event: Option<String>,
        reason: Option<String>,
    ) {
        self.lead.record_points(LedgerEntry {
            rule: rule.to_string(),
            points,
            event,
            at: self.now,
            reason,
        });
        // Saturating: absurd points must not crash the engine.
        self.lead.score = self.lead.score.saturating_add(points);
        self.touched(cond::fields::SCORE);
    }

    /// Step 4: plugins subscribed to the event type, in order. A failing
    /// plugin has no effect; the failure goes on the timeline.
    pub(super) fn call_plugins(&mut self, ev: &Event) {
        let Some(host) = self.ev.plugins else { return };
        for plugin in &self.rules.plugins {
            if !plugin.on.iter().any(|t| t == "*" || *t == ev.kind) {
                continue;
            }
            // Every effect is checked before any applies: one the lead could
            // not store (and read back) fails the whole call, as a trap does.
            match host
                .call(plugin, &self.lead, ev)
                .and_then(|effects| check_effects(&effects).map(|()| effects))
            {
                Ok(effects) => {
                    for e in effects {
                        self.plugin_effect(&plugin.name, &ev.id, e);
                    }
                }
                Err(error) => self.note(Note::PluginFailed {
                    plugin: plugin.name.clone(),
                    error,
                }),
            }
        }
    }

    fn plugin_effect(&mut self, plugin: &str, event: &str, e: PluginEffect) {
        match e {
            PluginEffect::Points { points, reason } => {
                self.add_points(plugin, points, Some(event.to_string()), Some(reason));
            }
            PluginEffect::SetAttribute { key, value } => {
                let value = self.attribute_value(&key, value);
                self.lead.attributes.insert(key, value);
                self.touched(cond::fields::ATTRIBUTES);
            }
            PluginEffect::Tag { tag } => {
                let tags = self
                    .lead
                    .attributes
                    .entry("tags")
                    .or_insert_with(|| Value::Array(vec![]));
                if !tags.is_array() {
                    *tags = Value::Array(vec![]);
                }
                if let Value::Array(list) = tags {
                    if !list.iter().any(|t| t.as_str() == Some(&tag)) {
                        list.push(Value::String(tag));
                    }
                }
                self.touched(cond::fields::ATTRIBUTES);
            }
        }
    }

    /// Step 5a: fit is the sum over fit rules that hold now.
    pub(super) fn recompute_fit(&mut self) {
        let rules = self.rules;
        let mut breakdown = Vec::new();
        for r in &rules.fit {
            if self.holds(&r.condition) {
                breakdown.push((r.name.clone(), r.points));
            }
        }
        let fit = breakdown
            .iter()
            .fold(0i64, |sum, (_, p)| sum.saturating_add(*p));
        self.lead.fit_breakdown = breakdown;
        if fit != self.lead.fit {
            self.lead.fit = fit;
            self.touched(cond::fields::FIT);
        }
    }
}

/// A number as people write one in text: an optional sign, digits with
/// optional thousands separators (one kind of `,`, `_`, a space or a
/// no-break space, between groups of three: `1,500`, `2 000 000`), and an
/// optional `.` with decimals. `None` for anything else, such as `1,5`,
/// `1.500,00`, `50-200` or `$10`: those stay text.
pub fn number_from_text(text: &str) -> Option<serde_json::Number> {
    let t = text.trim();
    let (sign, body) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let digits = match int.chars().find(|c| !c.is_ascii_digit()) {
        None => int.to_string(),
        Some(sep @ (',' | '_' | ' ' | '\u{a0}' | '\u{202f}')) => {
            let groups: Vec<&str> = int.split(sep).collect();
            let grouped = groups[0].len() <= 3
                && groups.iter().all(|g| all_digits(g))
                && groups[1..].iter().all(|g| g.len() == 3);
            if !grouped {
                return None;
            }
            groups.concat()
        }
        Some(_) => return None,
    };
    if !all_digits(&digits) {
        return None;
    }
    match frac {
        None => {
            let whole = format!("{sign}{digits}");
            whole
                .parse::<i64>()
                .map(serde_json::Number::from)
                .ok()
                .or_else(|| {
                    whole
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                })
        }
        Some(f) if all_digits(f) => format!("{sign}{digits}.{f}")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64),
        Some(_) => None,
    }
}

/// Whether a plugin's effects may be stored with the lead: attribute keys and
/// tags are identifiers, attribute values are bounded in depth, size and NUL
/// (what serde_json can read back, what PostgreSQL's `text` holds), reasons
/// are bounded text with a column of their own (`ledger.reason`). The error
/// names the effect, as the host's own output checks do.
pub fn check_effects(effects: &[PluginEffect]) -> Result<(), String> {
    for (i, e) in effects.iter().enumerate() {
        let checked = match e {
            PluginEffect::Points { reason, .. } => {
                bounds::check_text("reason", reason, bounds::MAX_TEXT_BYTES)
            }
            PluginEffect::SetAttribute { key, value } => {
                if key.is_empty() {
                    return Err(format!("invalid output: effect {i}: empty attribute key"));
                }
                bounds::check_text("key", key, bounds::MAX_ID_BYTES)
                    .and_then(|()| bounds::check_value("value", value))
            }
            PluginEffect::Tag { tag } => {
                if tag.is_empty() {
                    return Err(format!("invalid output: effect {i}: empty tag"));
                }
                bounds::check_text("tag", tag, bounds::MAX_ID_BYTES)
            }
        };
        checked.map_err(|err| format!("invalid output: effect {i} ({}): {err}", e.kind()))?;
    }
    Ok(())
}
