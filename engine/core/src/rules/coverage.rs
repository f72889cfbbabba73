//! `nurture check --events FILE`: the rules an events file would never fire,
//! and the event types in it that no rule reads. Warnings, not errors: a
//! sample of events need not hold every type.

use super::compile::{Ruleset, Trigger};
use super::Diagnostic;
use crate::model::BUILT_IN_TYPES;
use crate::rules::source::Pos;
use std::collections::BTreeMap;

/// The event types of an events file: where each first appears, and how often.
#[derive(Debug, Default)]
pub struct EventTypes {
    /// The file as named on the command line.
    pub display: String,
    /// Type → (1-based line of its first event, number of events).
    pub types: BTreeMap<String, (usize, usize)>,
}

impl EventTypes {
    /// Reads the types of a JSON Lines events file. Lines that are not an
    /// object with a string `type` are skipped: `simulate` reports them.
    pub fn read_str(display: &str, text: &str) -> EventTypes {
        let mut types: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(t) = v.get("type").and_then(serde_json::Value::as_str) {
                types.entry(t.to_string()).or_insert((i + 1, 0)).1 += 1;
            }
        }
        EventTypes {
            display: display.to_string(),
            types,
        }
    }
}

impl Ruleset {
    /// Warnings for `nurture check --events`, in file order: scoring rules and
    /// plugins whose `on` types never occur in `events`, then the event types
    /// of `events` that no rule and no built-in handling reads.
    pub fn event_warnings(&self, events: &EventTypes) -> Vec<Diagnostic> {
        let seen = |t: &str| t == "*" || events.types.contains_key(t);
        let in_file = || events.types.keys().map(String::as_str);
        let absent = |t: &str| {
            let hint = crate::suggest::suggest(t, in_file())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            format!("no event in {} has type `{t}`{hint}", events.display)
        };
        let mut out = Vec::new();
        let mut read: Vec<&str> = Vec::new();
        for r in &self.scoring {
            let Trigger::Events(types) = &r.trigger else {
                continue;
            };
            read.extend(types.iter().map(String::as_str));
            if types.iter().any(|t| seen(t)) {
                continue;
            }
            for (i, t) in types.iter().enumerate() {
                let Some(at) = r.on_at.get(i).or(r.on_at.last()) else {
                    continue;
                };
                out.push(Diagnostic {
                    message: format!(
                        "warning: scoring rule `{}` never fires: {}",
                        r.name,
                        absent(t)
                    ),
                    ..at.clone()
                });
            }
        }
        for p in &self.plugins {
            read.extend(p.on.iter().map(String::as_str));
            if !p.on.iter().any(|t| seen(t)) {
                let types = p.on.iter().map(|t| absent(t)).collect::<Vec<_>>();
                out.push(Diagnostic {
                    message: format!(
                        "warning: plugin `{}` never runs: {}",
                        p.name,
                        types.join("; ")
                    ),
                    ..p.wasm_at.clone()
                });
            }
        }
        if read.contains(&"*") {
            return out;
        }
        for (t, (line, count)) in &events.types {
            if read.contains(&t.as_str()) || BUILT_IN_TYPES.contains(&t.as_str()) {
                continue;
            }
            let hint = crate::suggest::suggest(t, read.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            out.push(Diagnostic {
                file: events.display.clone(),
                pos: Pos {
                    line: *line,
                    col: 1,
                },
                message: format!(
                    "warning: no rule reads event type `{t}`{hint} ({count} event{})",
                    if *count == 1 { "" } else { "s" }
                ),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn rules_that_never_fire_and_types_nobody_reads() {
        let rules = Ruleset::from_text(
            Path::new("r.yaml"),
            "scoring:\n  - name: webinar\n    on: webinar_atended\n    points: 5\n  - name: demo\n    on: [demo_requested, trial_started]\n    points: 5\n  - name: decay\n    schedule: '0 3 * * *'\n    points: -1\n",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let events = EventTypes::read_str(
            "e.jsonl",
            "{\"type\":\"webinar_attended\"}\n{\"type\":\"trial_started\"}\nnot json\n{\"type\":\"identify\"}\n{\"type\":\"webinar_attended\"}\n",
        );
        let got: Vec<String> = rules
            .event_warnings(&events)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "r.yaml:3:9: warning: scoring rule `webinar` never fires: no event in e.jsonl has type `webinar_atended` (did you mean `webinar_attended`?)",
                "e.jsonl:1:1: warning: no rule reads event type `webinar_attended` (did you mean `webinar_atended`?) (2 events)",
            ]
        );
    }
}
