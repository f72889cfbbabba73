//! Marketers' rule tests: `*.test.yaml` files next to the rules. Each case
//! gives events and the lead state expected after them; `nurture test` runs
//! every case on the same in-memory world as `simulate` and prints a diff.
//!
//! ```yaml
//! tests:
//!   - name: pricing visitors become MQLs
//!     events:
//!       - { lead: u1, type: page_viewed, at: "2026-01-05T10:00:00Z", properties: { path: /pricing } }
//!     until: "2026-01-10T00:00:00Z"     # optional: run due work up to here
//!     expect:
//!       u1: { stage: mql, score: 10, emails: [welcome] }
//! ```

use crate::eval::Evaluator;
use crate::model::{Consent, Event, Stage};
use crate::rules::source::YamlPath;
use crate::rules::{deserialize_at, read_yaml, Diagnostic, Ruleset};
use crate::sim::{explain, World};
use crate::writes::Entry;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    events: Vec<serde_yaml::Value>,
    #[serde(default)]
    until: Option<String>,
    expect: BTreeMap<String, Expect>,
}

/// What a lead should look like; keys left out are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    stage: Option<Stage>,
    #[serde(default)]
    score: Option<i64>,
    #[serde(default)]
    fit: Option<i64>,
    /// `null` expects no owner.
    #[serde(default, deserialize_with = "present")]
    owner: Option<Option<String>>,
    #[serde(default)]
    consent: Option<Consent>,
    /// Template names of the drip emails sent, in order.
    #[serde(default)]
    emails: Option<Vec<String>>,
    /// Attributes that must have these values (others may exist).
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    /// Timeline entries that must appear, in this order (others may come
    /// between): each names some fields of an entry as `simulate
    /// --explain` prints it, e.g. `{ kind: note, note: step_postponed,
    /// reason: window }`.
    #[serde(default)]
    timeline: Option<Vec<Map<String, Value>>>,
    /// The plugins expected to fail for this lead (`[]`: none may fail).
    #[serde(default)]
    plugin_errors: Option<Vec<String>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `file:line:col` of the case.
    pub place: String,
    /// Differences, empty when the case passed.
    pub diffs: Vec<String>,
    /// What failed at run time (plugins, conditions, emails that could not
    /// be composed), by lead: shown with the differences.
    pub problems: Vec<String>,
}

/// Runs every `*.test.yaml` under `dir` against `rules`. Errors in test files
/// come back as diagnostics.
pub fn run_dir(rules: &Ruleset, dir: &Path) -> Result<Vec<CaseResult>, Vec<Diagnostic>> {
    run_dir_with(rules, dir, None)
}

/// [`run_dir`] with plugins run by `plugins`.
pub fn run_dir_with(
    rules: &Ruleset,
    dir: &Path,
    plugins: Option<&dyn crate::eval::PluginHost>,
) -> Result<Vec<CaseResult>, Vec<Diagnostic>> {
    let eval = Evaluator {
        rules,
        plugins,
        explain: true,
    };
    let mut files = Vec::new();
    crate::rules::collect_yaml(dir, &mut files, true);
    files.sort();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match run_file(eval, &f) {
            Ok(mut r) => results.append(&mut r),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn run_file(eval: Evaluator<'_>, path: &Path) -> Result<Vec<CaseResult>, Vec<Diagnostic>> {
    let (display, value, map) = read_yaml(path).map_err(|d| vec![d])?;
    let root = YamlPath::default();
    let file: TestFile = deserialize_at(&map, &display, &root, value).map_err(|d| vec![d])?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, case) in file.tests.into_iter().enumerate() {
        let case_path = root.key("tests").index(i);
        let pos = map.value_pos(&case_path);
        let place = format!("{display}:{}:{}", pos.line, pos.col);
        let at = |p: &YamlPath, message: String| {
            let pos = map.value_pos(p);
            Diagnostic {
                file: display.clone(),
                pos,
                message,
            }
        };
        let mut events = Vec::new();
        let mut last_at = None;
        for (n, raw) in case.events.iter().enumerate() {
            let ev_path = case_path.key("events").index(n);
            let mut json = match serde_json::to_value(raw) {
                Ok(j) => j,
                Err(e) => {
                    errors.push(at(&ev_path, format!("event is not JSON-like: {e}")));
                    continue;
                }
            };
            if let Some(obj) = json.as_object_mut() {
                // Ids matter for idempotency, not to marketers writing tests.
                obj.entry("id")
                    .or_insert_with(|| Value::String(format!("{}#{}", case.name, n + 1)));
            }
            match Event::from_json(&json, last_at) {
                Ok(ev) => {
                    last_at = Some(ev.at);
                    events.push(ev);
                }
                Err(e) => {
                    let field_path = e.field.split('.').fold(ev_path.clone(), |p, k| p.key(k));
                    errors.push(at(&field_path, format!("event {}: {e}", n + 1)));
                }
            }
        }
        let until = match case
            .until
            .as_deref()
            .map(crate::model::time::parse_time_or_date)
        {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                errors.push(at(
                    &case_path.key("until"),
                    format!("until: neither a date (2026-01-10) nor an RFC 3339 time: {e}"),
                ));
                continue;
            }
        };
        if !errors.is_empty() {
            continue;
        }
        let mut world = World::new(eval);
        world.explain();
        world.run(&mut events, until);
        let stories = world.stories.as_ref();
        let story = |id: &str| stories.map_or(&[][..], |s| s.of(id));
        let mut diffs = Vec::new();
        for (lead, exp) in &case.expect {
            match world.leads.get(lead) {
                None => diffs.push(format!("{lead}: expected a lead, but no event created it")),
                Some(l) => {
                    compare(lead, exp, l, &mut diffs);
                    compare_story(lead, exp, story(lead), &mut diffs);
                }
            }
        }
        let problems = world
            .in_order()
            .iter()
            .flat_map(|l| {
                explain::problems(story(&l.id))
                    .into_iter()
                    .map(|p| format!("{}: {p}", l.id))
            })
            .collect();
        results.push(CaseResult {
            name: case.name,
            place,
            diffs,
            problems,
        });
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn compare(id: &str, e: &Expect, l: &crate::model::LeadState, diffs: &mut Vec<String>) {
    let mut check = |field: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{id}.{field}: expected {want}, got {got}"));
        }
    };
    if let Some(s) = e.stage {
        check("stage", s.to_string(), l.stage.to_string());
    }
    if let Some(s) = e.score {
        let why = l
            .score_breakdown()
            .iter()
            .map(|(r, p)| format!("{r} {p:+}"))
            .collect::<Vec<_>>()
            .join(", ");
        let got = if why.is_empty() {
            l.score.to_string()
        } else {
            format!("{} ({why})", l.score)
        };
        if s != l.score {
            check("score", s.to_string(), got);
        }
    }
    if let Some(f) = e.fit {
        let why = l
            .fit_breakdown
            .iter()
            .map(|(r, p)| format!("{r} {p:+}"))
            .collect::<Vec<_>>()
            .join(", ");
        if f != l.fit {
            check("fit", f.to_string(), format!("{} ({why})", l.fit));
        }
    }
    if let Some(o) = &e.owner {
        let show = |o: Option<&str>| o.map_or("null".to_string(), str::to_string);
        check("owner", show(o.as_deref()), show(l.owner.as_deref()));
    }
    if let Some(c) = e.consent {
        check("consent", c.as_str().into(), l.consent.as_str().into());
    }
    if let Some(em) = &e.emails {
        let got: Vec<&str> = l
            .history
            .emails
            .iter()
            .map(|m| m.template.as_str())
            .collect();
        check(
            "emails",
            format!("[{}]", em.join(", ")),
            format!("[{}]", got.join(", ")),
        );
    }
    if let Some(attrs) = &e.attributes {
        for (k, v) in attrs {
            let got = l
                .attributes
                .get(k)
                .map_or("(missing)".to_string(), Value::to_string);
            check(&format!("attributes.{k}"), v.to_string(), got);
        }
    }
}

/// The timeline and plugin failures `e` expects of lead `id`'s story.
fn compare_story(id: &str, e: &Expect, story: &[Entry], diffs: &mut Vec<String>) {
    if let Some(want) = &e.plugin_errors {
        // Which plugins failed, not how often.
        let failures = explain::plugin_failures(story);
        let failed: BTreeSet<&str> = failures.iter().map(|(plugin, _)| plugin.as_str()).collect();
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        if want != failed {
            let failures: Vec<String> = failures.iter().map(|(p, e)| format!("{p}: {e}")).collect();
            diffs.push(format!(
                "{id}.plugin_errors: expected [{}], got [{}]",
                want.into_iter().collect::<Vec<_>>().join(", "),
                failures.join("; ")
            ));
        }
    }
    let Some(want) = &e.timeline else { return };
    let entries: Vec<Value> = story.iter().map(explain::entry_json).collect();
    let mut from = 0;
    for (n, w) in want.iter().enumerate() {
        let found = entries[from..]
            .iter()
            .position(|got| w.iter().all(|(k, v)| matches(&got[k.as_str()], v)));
        match found {
            Some(i) => from += i + 1,
            None => {
                let shown: Vec<String> = entries.iter().map(brief).collect();
                diffs.push(format!(
                    "{id}.timeline[{n}]: no entry{} matches {}; the timeline:\n      {}",
                    if n == 0 { "" } else { " after the one before" },
                    Value::Object(w.clone()),
                    shown.join("\n      ")
                ));
                return;
            }
        }
    }
}

/// Whether a field as shown matches what a test wrote: equal, or a number
/// written as text (YAML keeps `1` and `"1"` apart; marketers may not).
fn matches(got: &Value, want: &Value) -> bool {
    got == want
        || match (got, want) {
            (Value::Number(g), Value::String(w)) => g.to_string() == *w,
            (Value::String(g), Value::Number(w)) => *g == w.to_string(),
            _ => false,
        }
}

/// One timeline entry on a line: time, kind, the rest.
fn brief(e: &Value) -> String {
    let mut rest = e.as_object().cloned().unwrap_or_default();
    let at = rest.remove("at").unwrap_or_default();
    let kind = rest.remove("kind").unwrap_or_default();
    rest.remove("messages");
    format!(
        "{} {} {}",
        at.as_str().unwrap_or(""),
        kind.as_str().unwrap_or(""),
        Value::Object(rest)
    )
}
