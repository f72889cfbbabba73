//! Each lead's story for `simulate --explain` and rule tests: the timeline
//! the daemon would show for the same events (docs/daemon.md, Timeline),
//! made from the same pure parts. What the daemon composes from its tables
//! when read (events applied, points, stage moves, assignments) comes from
//! what the decision added to the lead's history; the rest (notes, emails,
//! notices, webhooks) from [`crate::writes::collect`], so emails are
//! rendered exactly as the daemon would render them, and a template that
//! fails shows as `email_not_composed` before go-live.

use crate::eval::Decision;
use crate::mail::{Composer, Links, Outgoing, Secret};
use crate::model::{time, time::Timestamp, Event, LeadState};
use crate::rules::config::Strategy;
use crate::rules::Ruleset;
use crate::writes::{collect, Collected, Entry, TimelineKind};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Links in explained emails point here: they show where a link goes, not
/// a daemon's real address, and are signed with a fixed key.
const BASE_URL: &str = "http://localhost:8080";
const SECRET: &[u8] = b"nurture simulate";

/// How long each part of a lead's history was before a decision.
#[derive(Clone, Copy, Default)]
pub struct Mark {
    ledger: usize,
    transitions: usize,
    assignments: usize,
    feedback: usize,
}

impl Mark {
    pub fn of(lead: Option<&LeadState>) -> Mark {
        lead.map_or_else(Mark::default, |l| Mark {
            ledger: l.history.ledger.len(),
            transitions: l.history.transitions.len(),
            assignments: l.history.assignments.len(),
            feedback: l.history.feedback.len(),
        })
    }
}

/// Every lead's timeline, as decisions are made.
pub struct Stories {
    composer: Composer,
    by_lead: HashMap<String, Vec<Entry>>,
}

impl Stories {
    pub fn new(rules: &Ruleset) -> Stories {
        let links = Links {
            base_url: BASE_URL.to_string(),
            secret: Secret::new(SECRET.to_vec()),
        };
        Stories {
            composer: Composer::new(rules, links),
            by_lead: HashMap::new(),
        }
    }

    /// Lead `id`'s timeline so far, in order.
    pub fn of(&self, id: &str) -> &[Entry] {
        self.by_lead.get(id).map_or(&[], Vec::as_slice)
    }

    /// Records what `d`, decided at `at` (for `event`, if any), adds to its
    /// lead's story; `before` is the lead's history before it. Entries come
    /// in the order the daemon's timeline shows them at one time: the
    /// event, its points, stage moves, assignments, then the rest.
    pub fn record(
        &mut self,
        rules: &Ruleset,
        event: Option<&Event>,
        before: Mark,
        d: &Decision,
        at: Timestamp,
    ) {
        let lead = &d.lead;
        let h = &lead.history;
        let mut entries = Vec::new();
        let mut add = |kind, detail| entries.push(Entry::new(&lead.id, at, kind, detail));
        if let Some(ev) = event {
            add(
                TimelineKind::Event,
                json!({"id": ev.id, "type": ev.kind.as_str()}),
            );
        }
        for l in h.ledger.get(before.ledger..).unwrap_or_default() {
            let mut detail = json!({"rule": l.rule, "points": l.points, "event": l.event});
            if let Some(r) = &l.reason {
                detail["reason"] = json!(r);
            }
            add(TimelineKind::Scored, detail);
        }
        for t in h.transitions.get(before.transitions..).unwrap_or_default() {
            // The condition that holds for the stage entered (a recycle
            // moves back without one).
            let condition = rules
                .stages
                .iter()
                .find(|(s, _)| *s == t.to)
                .filter(|_| t.to > t.from)
                .map(|(_, c)| c.source.to_string());
            let mut detail = json!({"from": t.from.as_str(), "to": t.to.as_str()});
            if let Some(c) = condition {
                detail["condition"] = json!(c);
            } else if let Some(f) = h.feedback.get(before.feedback..).and_then(<[_]>::last) {
                detail["feedback"] = json!(f.status);
            }
            add(TimelineKind::StageChanged, detail);
        }
        for a in h.assignments.get(before.assignments..).unwrap_or_default() {
            let mut detail = json!({"owner": a.owner, "rule": a.rule});
            if let Some(r) = rules.route_rules.iter().find(|r| r.name == a.rule) {
                detail["strategy"] = json!(strategy(r.strategy));
            }
            add(TimelineKind::Assigned, detail);
        }
        let mut out = Collected::default();
        let decision = Decision {
            lead: lead.clone(),
            effects: d.effects.clone(),
        };
        collect(&self.composer, rules, decision, at, &mut out);
        let rendered: HashMap<String, Outgoing> = out
            .outbox
            .iter()
            .filter_map(|q| serde_json::from_value::<Outgoing>(q.payload.clone()).ok())
            .map(|m| (m.message_id.clone(), m))
            .collect();
        for mut e in out.timeline {
            // A skipped step shows the condition that did not hold.
            if e.detail["note"] == "step_skipped" {
                let step = rules
                    .campaigns
                    .iter()
                    .find(|c| e.detail["campaign"] == c.name.as_str())
                    .zip(e.detail["step"].as_u64())
                    .and_then(|(c, n)| c.steps.get((n as usize).checked_sub(1)?));
                if let Some(cond) = step.and_then(|s| s.condition.as_ref()) {
                    e.detail["condition"] = json!(cond.source.to_string());
                }
            }
            // Emails and notices show what they say.
            let ids = e.detail["message_ids"].as_array().cloned();
            if let Some(ids) = ids {
                let messages: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| rendered.get(id.as_str()?))
                    .map(|m| json!({"to": m.to, "subject": m.subject, "text": m.text}))
                    .collect();
                e.detail["messages"] = Value::Array(messages);
            }
            entries.push(e);
        }
        self.by_lead
            .entry(lead.id.clone())
            .or_default()
            .append(&mut entries);
    }
}

fn strategy(s: Strategy) -> &'static str {
    match s {
        Strategy::RoundRobin => "round_robin",
        Strategy::Weighted => "weighted",
        Strategy::LeastLoaded => "least_loaded",
        Strategy::Claim => "claim",
    }
}

/// An entry as `simulate --explain` prints it and rule tests match it: its
/// time and kind, then its detail's fields.
pub fn entry_json(e: &Entry) -> Value {
    let mut m = Map::new();
    m.insert("at".into(), json!(time::format(&e.at)));
    m.insert("kind".into(), json!(e.kind.as_str()));
    match &e.detail {
        Value::Object(d) => m.extend(d.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Value::Null => {}
        other => {
            m.insert("detail".into(), other.clone());
        }
    }
    Value::Object(m)
}

/// The plugin failures in a story, as (plugin, error).
pub fn plugin_failures(entries: &[Entry]) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    entries
        .iter()
        .filter(|e| e.kind == TimelineKind::Note && e.detail["note"] == "plugin_failed")
        .map(|e| (text(&e.detail["plugin"]), text(&e.detail["error"])))
        .collect()
}

/// What went wrong at run time in a story: plugin failures, condition
/// errors, emails that could not be composed. Shown under a failed test.
pub fn problems(entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        let at = time::format(&e.at);
        match e.kind {
            TimelineKind::EmailNotComposed => out.push(format!(
                "{at}: email not composed: {}",
                e.detail["error"].as_str().unwrap_or("?")
            )),
            TimelineKind::Note if e.detail["note"] == "plugin_failed" => out.push(format!(
                "{at}: plugin {} failed: {}",
                e.detail["plugin"].as_str().unwrap_or("?"),
                e.detail["error"].as_str().unwrap_or("?")
            )),
            TimelineKind::Note if e.detail["note"] == "not_a_number" => out.push(format!(
                "{at}: rule {}: {} is the text {:?}, not a number",
                e.detail["rule"].as_str().unwrap_or("?"),
                e.detail["field"].as_str().unwrap_or("?"),
                e.detail["value"].as_str().unwrap_or("?")
            )),
            TimelineKind::Note if e.detail["note"] == "condition_error" => out.push(format!(
                "{at}: rule {}: {}",
                e.detail["rule"].as_str().unwrap_or("?"),
                e.detail["message"].as_str().unwrap_or("?")
            )),
            _ => {}
        }
    }
    out
}

/// A lead and its story as `simulate --explain` prints it for people: a
/// header with where the lead stands and why (score and fit rule by rule),
/// then one line per timeline entry.
pub fn story_text(lead: &LeadState, entries: &[Entry]) -> String {
    use std::fmt::Write as _;
    let by_rule = |items: &[(String, i64)]| -> String {
        let parts: Vec<String> = items.iter().map(|(r, p)| format!("{r} {p:+}")).collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let mut out = format!(
        "{}: {}, score {}{}, fit {}{}, owner {}, consent {}\n",
        lead.id,
        lead.stage,
        lead.score,
        by_rule(&lead.score_breakdown()),
        lead.fit,
        by_rule(&lead.fit_breakdown),
        lead.owner.as_deref().unwrap_or("none"),
        lead.consent.as_str(),
    );
    for e in entries {
        let _ = writeln!(out, "  {}  {}", time::format(&e.at), line(e));
    }
    out
}

/// One entry in words; kinds without their own wording show their fields.
fn line(e: &Entry) -> String {
    let d = &e.detail;
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let subject = || {
        d["messages"][0]["subject"]
            .as_str()
            .map(|s| format!(": {s:?}"))
            .unwrap_or_default()
    };
    match e.kind {
        TimelineKind::Event => format!("event {} ({})", s("type"), s("id")),
        TimelineKind::Scored => {
            let why = match (d["event"].as_str(), d["reason"].as_str()) {
                (_, Some(r)) => format!(" ({r})"),
                (Some(ev), None) => format!(" (event {ev})"),
                (None, None) => String::new(),
            };
            format!(
                "points {} {:+}{why}",
                s("rule"),
                d["points"].as_i64().unwrap_or(0)
            )
        }
        TimelineKind::StageChanged => match (d["condition"].as_str(), d["feedback"].as_str()) {
            (Some(c), _) => format!("stage {} -> {} because {c}", s("from"), s("to")),
            (None, Some(f)) => format!("stage {} -> {}: sales answered {f}", s("from"), s("to")),
            (None, None) => format!("stage {} -> {}", s("from"), s("to")),
        },
        TimelineKind::Assigned => format!(
            "assigned to {} by routing rule {} ({})",
            s("owner"),
            s("rule"),
            s("strategy")
        ),
        TimelineKind::Email => format!(
            "email sent: campaign {} step {} ({}){}",
            s("campaign"),
            d["step"],
            s("template"),
            subject()
        ),
        TimelineKind::Notification => {
            let to = joined(&d["messages"], |m| m["to"].as_str());
            format!("notice to {to}{}", subject())
        }
        TimelineKind::EmailNotComposed => format!("email NOT composed: {}", s("error")),
        TimelineKind::Webhook => format!("webhook {} ({})", s("webhook"), s("event")),
        TimelineKind::Note => note(d),
        other => format!("{} {}", other.as_str(), d),
    }
}

/// A note in words: the common ones worded, others as their fields.
fn note(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let step = || format!("campaign {} step {}", s("campaign"), d["step"]);
    match d["note"].as_str().unwrap_or("") {
        "enrolled" => format!("enrolled in campaign {}", s("campaign")),
        "exited" => format!("left campaign {}: {}", s("campaign"), s("reason")),
        "completed" => format!("completed campaign {}", s("campaign")),
        "step_skipped" => match d["condition"].as_str() {
            Some(c) => format!("{} skipped: its `if` does not hold: {c}", step()),
            None => format!("{} skipped", step()),
        },
        "step_postponed" => {
            let why = match s("reason").as_str() {
                "consent" => "until the lead consents".to_string(),
                "frequency_cap" => "by the frequency cap".to_string(),
                "window" => "to the sending window".to_string(),
                other => other.to_string(),
            };
            let until = d["until"]
                .as_str()
                .map(|u| format!(" (to {u})"))
                .unwrap_or_default();
            format!("{} postponed {why}{until}", step())
        }
        "limit_reached" => {
            let per = d["per"]
                .as_str()
                .map(|p| format!(" per {p}"))
                .unwrap_or_default();
            format!(
                "no points from {}: its limit of {} times{per} is used up",
                s("rule"),
                d["times"]
            )
        }
        "plugin_failed" => format!("plugin {} FAILED: {}", s("plugin"), s("error")),
        "condition_error" => format!("rule {}: condition ERROR: {}", s("rule"), s("message")),
        "unrouted" => format!("not routed: {}", s("reason")),
        "not_a_number" => format!(
            "rule {}: {} is the text {:?}, not a number (settings.numbers converts it)",
            s("rule"),
            s("field"),
            s("value")
        ),
        "sla_breached" => format!("SLA breached by {}", s("owner")),
        "sla_stopped" => match d["to"].as_str() {
            Some(to) => format!(
                "SLA stopped after {} breaches: from {} to the fallback {to}",
                d["breaches"],
                s("owner")
            ),
            None => format!(
                "SLA stopped after {} breaches: stays with {}",
                d["breaches"],
                s("owner")
            ),
        },
        "rule_full" => format!(
            "routing rule {} passed over: every owner at capacity",
            s("rule")
        ),
        "offered" => {
            format!(
                "offered by routing rule {} to {}",
                s("rule"),
                joined(&d["owners"], Value::as_str)
            )
        }
        "claim_refused" => format!("claim by {} refused: {}", s("owner"), s("reason")),
        "claim_expired" => match d["to"].as_str() {
            Some(to) => format!(
                "nobody claimed it in time (rule {}): to the fallback {to}",
                s("rule")
            ),
            None => format!(
                "nobody claimed it in time (rule {}): on to the next rule",
                s("rule")
            ),
        },
        "fallback_full" => format!("fallback {} is at capacity", s("owner")),
        _ => {
            let mut rest = d.as_object().cloned().unwrap_or_default();
            let note = rest.remove("note").unwrap_or_default();
            let fields: Vec<String> = rest
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k} {s}"),
                    other => format!("{k} {other}"),
                })
                .collect();
            format!(
                "{} {}",
                note.as_str().unwrap_or("note").replace('_', " "),
                fields.join(", ")
            )
        }
    }
}

/// The texts `pick` finds in a JSON array's items, joined with commas
/// (nothing for anything but an array).
pub(crate) fn joined<'v>(array: &'v Value, pick: impl Fn(&'v Value) -> Option<&'v str>) -> String {
    let items: Vec<&str> = array
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(pick)
        .collect();
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Evaluator;
    use crate::sim::{read_events_str, World};

    const RULES: &str = "\
scoring:
  - { name: pricing, on: page_viewed, points: 10, limit: { times: 1, per: 7d } }
stages:
  lead: 'lead.email != \"\"'
  mql: 'lead.score >= 10'
templates:
  - { name: hi, subject: 'Hi {{ lead.attributes.first_name }}', text: 'Hello' }
  - { name: broken, subject: '{{ lead.attributes.first_name + 1 }}', text: 'x' }
campaigns:
  - name: drip
    enroll: 'lead.stage == \"lead\"'
    steps: [{ after: 0s, template: hi }, { after: 1d, template: broken }]
settings:
  email: { from: 'Us <us@x.example>', require_consent: false }
";

    const EVENTS: &str = r#"
{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z","traits":{"email":"a@x.example","first_name":"Ann"}}
{"id":"e2","lead":"u1","type":"page_viewed","at":"2026-01-05T11:00:00Z"}
{"id":"e3","lead":"u1","type":"page_viewed","at":"2026-01-05T12:00:00Z"}
"#;

    fn story(explain: bool) -> Vec<Value> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), RULES).unwrap();
        let rules = Ruleset::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
        let eval = Evaluator {
            explain,
            ..Evaluator::new(&rules)
        };
        let mut world = World::new(eval);
        world.explain();
        let mut events = read_events_str("events", EVENTS).unwrap();
        world.run(
            &mut events,
            Some(time::parse("2026-01-07T00:00:00Z").unwrap()),
        );
        let stories = world.stories.as_ref().unwrap();
        stories.of("u1").iter().map(entry_json).collect()
    }

    fn kinds(entries: &[Value]) -> Vec<String> {
        let name = |e: &Value| match e["note"].as_str() {
            Some(n) => format!("note:{n}"),
            None => e["kind"].as_str().unwrap().to_string(),
        };
        entries.iter().map(name).collect()
    }

    #[test]
    fn a_story_is_the_daemons_timeline_in_its_order_with_emails_rendered() {
        let s = story(true);
        assert_eq!(
            kinds(&s),
            [
                "event",
                "stage_changed",
                "note:enrolled",
                "email",
                "event",
                "scored",
                "stage_changed",
                "event",
                "note:limit_reached",
                "email_not_composed",
                "note:completed",
            ]
        );
        assert_eq!(s[1]["condition"], "lead.email != \"\"");
        assert_eq!(s[3]["messages"][0]["subject"], "Hi Ann");
        assert_eq!(s[3]["messages"][0]["to"], "a@x.example");
        assert_eq!(s[8]["rule"], "pricing");
        assert_eq!(s[8]["per"], "7d");
        assert_eq!(s[9]["at"], "2026-01-06T10:00:00Z");
        assert!(
            s[9]["error"].as_str().unwrap().contains("subject"),
            "{}",
            s[9]
        );
        let entries: Vec<Entry> = Vec::new();
        assert!(problems(&entries).is_empty());
    }

    #[test]
    fn limits_are_only_noted_when_explaining() {
        let quiet = story(false);
        assert!(
            !kinds(&quiet).contains(&"note:limit_reached".to_string()),
            "{quiet:?}"
        );
        assert_eq!(quiet.len(), story(true).len() - 1);
    }
}
