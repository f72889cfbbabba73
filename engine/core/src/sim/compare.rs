//! What a rules change would have done: the leads of two worlds that ran
//! the same events, one on the rules in force (*base*) and one on a
//! candidate, compared lead by lead and summed up the way a marketer reads
//! it (leads per stage, MQLs and SQLs gained and lost, emails per campaign
//! step, assignments per owner, the score distribution), with, for each
//! lead that differs, the first ledger entry or stage move where the two
//! histories part. `simulate --compare` and `replay` print it. Pure.

use super::World;
use crate::eval::Evaluator;
use crate::model::{time::Timestamp, Event, LeadState, Stage};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Counts before and with the candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub base: i64,
    pub candidate: i64,
}

impl Pair {
    fn add(&mut self, base: bool, n: i64) {
        if base {
            self.base += n
        } else {
            self.candidate += n
        }
    }
}

/// A score distribution's landmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Scores {
    pub mean: f64,
    pub median: i64,
    pub p90: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub leads: usize,
    /// Leads whose stage, score, fit, owner or emails differ.
    pub differing: usize,
    /// Leads in each stage now.
    pub stages: BTreeMap<&'static str, Pair>,
    /// Leads that reached MQL (or beyond) only with the candidate, and only without.
    pub mql_gained: usize,
    pub mql_lost: usize,
    pub sql_gained: usize,
    pub sql_lost: usize,
    /// Drip emails per `campaign#step`.
    pub emails: BTreeMap<String, Pair>,
    /// Assignments per owner.
    pub assignments: BTreeMap<String, Pair>,
    pub score: (Scores, Scores),
}

/// Where two histories of a lead part first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// `ledger` or `transitions`.
    pub part: &'static str,
    /// The entries at the first place they differ (`null`: none there).
    pub base: Value,
    pub candidate: Value,
}

/// A lead that ends differently.
#[derive(Debug, Clone, Serialize)]
pub struct LeadDiff {
    pub lead: String,
    pub base: Value,
    pub candidate: Value,
    pub first_difference: Option<Divergence>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub summary: Summary,
    pub leads: Vec<LeadDiff>,
}

/// Runs `events` through `base` and `candidate` side by side (a thread
/// each) as `simulate` runs them, up to `until` (default: the last event's
/// time), and compares the leads. `None` once `cancel` is set (it is read
/// every few thousand events).
pub fn run_both(
    base: Evaluator<'_>,
    candidate: Evaluator<'_>,
    events: &[Event],
    until: Option<Timestamp>,
    cancel: &AtomicBool,
) -> Option<Comparison> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.at);
    let until = until.or_else(|| sorted.last().map(|e| e.at));
    let sorted = &sorted;
    let run = move |eval: Evaluator<'_>| -> Option<Vec<LeadState>> {
        let mut world = World::new(eval);
        for (i, ev) in sorted.iter().enumerate() {
            if i % 4096 == 0 && cancel.load(Ordering::Relaxed) {
                return None;
            }
            world.apply(ev, until);
        }
        if let Some(u) = until {
            world.run_until(u);
        }
        let mut leads: Vec<LeadState> = world.leads.into_values().collect();
        leads.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Some(leads)
    };
    let (b, c) = std::thread::scope(|s| {
        let b = s.spawn(move || run(base));
        let c = run(candidate);
        (b.join(), c)
    });
    let (b, c) = (b.ok()??, c?);
    Some(compare(
        &b.iter().collect::<Vec<_>>(),
        &c.iter().collect::<Vec<_>>(),
    ))
}

/// Compares the leads of two worlds (each in id order, as
/// [`super::World::in_order`] gives them). A lead only one world holds
/// counts as differing, with the other side `null`.
pub fn compare(base: &[&LeadState], candidate: &[&LeadState]) -> Comparison {
    let mut s = Summary::default();
    for st in Stage::ALL {
        s.stages.insert(st.as_str(), Pair::default());
    }
    for (side, leads) in [(true, base), (false, candidate)] {
        for l in leads.iter() {
            if let Some(p) = s.stages.get_mut(l.stage.as_str()) {
                p.add(side, 1);
            }
            for e in &l.history.emails {
                s.emails
                    .entry(format!("{}#{}", e.campaign, e.step))
                    .or_default()
                    .add(side, 1);
            }
            for a in &l.history.assignments {
                s.assignments
                    .entry(a.owner.clone())
                    .or_default()
                    .add(side, 1);
            }
        }
    }
    s.score = (scores(base), scores(candidate));
    let by_id = |leads: &[&LeadState]| -> BTreeMap<String, usize> {
        leads
            .iter()
            .enumerate()
            .map(|(i, l)| (l.id.clone(), i))
            .collect()
    };
    let (bi, ci) = (by_id(base), by_id(candidate));
    let mut ids: Vec<&String> = bi.keys().chain(ci.keys()).collect();
    ids.sort_unstable();
    ids.dedup();
    s.leads = ids.len();
    let mut leads = Vec::new();
    for id in ids {
        let b = bi.get(id).map(|&i| base[i]);
        let c = ci.get(id).map(|&i| candidate[i]);
        let reached = |l: Option<&LeadState>, st: Stage| l.is_some_and(|l| ever(l, st));
        for (st, gained, lost) in [
            (Stage::Mql, &mut s.mql_gained, &mut s.mql_lost),
            (Stage::Sql, &mut s.sql_gained, &mut s.sql_lost),
        ] {
            match (reached(b, st), reached(c, st)) {
                (false, true) => *gained += 1,
                (true, false) => *lost += 1,
                _ => {}
            }
        }
        let (bv, cv) = (b.map(outcome), c.map(outcome));
        if bv != cv {
            leads.push(LeadDiff {
                lead: id.clone(),
                base: bv.unwrap_or(Value::Null),
                candidate: cv.unwrap_or(Value::Null),
                first_difference: b.zip(c).and_then(|(b, c)| diverge(b, c)),
            });
        }
    }
    s.differing = leads.len();
    Comparison { summary: s, leads }
}

/// Whether a lead reached `stage` (or beyond) at some time.
fn ever(l: &LeadState, stage: Stage) -> bool {
    l.stage >= stage || l.history.transitions.iter().any(|t| t.to >= stage)
}

/// What a marketer compares of a lead.
fn outcome(l: &LeadState) -> Value {
    let emails: Vec<String> = l
        .history
        .emails
        .iter()
        .map(|e| format!("{}#{}", e.campaign, e.step))
        .collect();
    json!({
        "stage": l.stage.as_str(), "score": l.score, "fit": l.fit,
        "owner": l.owner, "emails": emails,
    })
}

/// The first place the ledgers, else the stage moves, of a lead differ.
fn diverge(b: &LeadState, c: &LeadState) -> Option<Divergence> {
    fn first<T: Serialize + PartialEq>(part: &'static str, b: &[T], c: &[T]) -> Option<Divergence> {
        let n = b.len().max(c.len());
        let i = (0..n).find(|&i| b.get(i) != c.get(i))?;
        let at = |v: &[T]| v.get(i).map_or(Value::Null, |e| json!(e));
        Some(Divergence {
            part,
            base: at(b),
            candidate: at(c),
        })
    }
    first("ledger", &b.history.ledger, &c.history.ledger).or_else(|| {
        first(
            "transitions",
            &b.history.transitions,
            &c.history.transitions,
        )
    })
}

fn scores(leads: &[&LeadState]) -> Scores {
    if leads.is_empty() {
        return Scores::default();
    }
    let mut v: Vec<i64> = leads.iter().map(|l| l.score).collect();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Scores {
        mean: v.iter().map(|&s| s as f64).sum::<f64>() / v.len() as f64,
        median: at(0.5),
        p90: at(0.9),
    }
}

/// The report for people: the summary, then up to `limit` differing leads.
pub fn text(c: &Comparison, limit: usize) -> String {
    use std::fmt::Write as _;
    let s = &c.summary;
    let mut out = String::new();
    let change = |p: &Pair| {
        let d = p.candidate - p.base;
        if d == 0 {
            "=".to_string()
        } else {
            format!("{d:+}")
        }
    };
    let _ = writeln!(
        out,
        "{} leads, {} end differently with the candidate rules",
        s.leads, s.differing
    );
    let _ = writeln!(
        out,
        "MQLs: {} gained, {} lost; SQLs: {} gained, {} lost",
        s.mql_gained, s.mql_lost, s.sql_gained, s.sql_lost
    );
    let table = |out: &mut String, title: &str, rows: Vec<(String, Pair)>| {
        let _ = writeln!(
            out,
            "\n{title:<28} {:>8} {:>10} {:>8}",
            "now", "candidate", "change"
        );
        for (k, p) in rows {
            let _ = writeln!(
                out,
                "  {k:<26} {:>8} {:>10} {:>8}",
                p.base,
                p.candidate,
                change(&p)
            );
        }
    };
    let stages = s.stages.iter().map(|(k, p)| (k.to_string(), *p));
    let mut stages: Vec<(String, Pair)> = stages.collect();
    stages.sort_by_key(|(k, _)| Stage::parse(k));
    table(&mut out, "leads per stage", stages);
    table(
        &mut out,
        "emails per campaign step",
        s.emails.iter().map(|(k, p)| (k.clone(), *p)).collect(),
    );
    table(
        &mut out,
        "assignments per owner",
        s.assignments.iter().map(|(k, p)| (k.clone(), *p)).collect(),
    );
    let (b, n) = (&s.score.0, &s.score.1);
    let _ = writeln!(
        out,
        "\nscore: mean {:.1} -> {:.1}, median {} -> {}, p90 {} -> {}",
        b.mean, n.mean, b.median, n.median, b.p90, n.p90
    );
    if !c.leads.is_empty() {
        let _ = writeln!(out, "\nleads that differ (now -> candidate):");
    }
    for d in c.leads.iter().take(limit) {
        let show = |v: &Value| -> String {
            if v.is_null() {
                return "(not there)".into();
            }
            let emails = super::explain::joined(&v["emails"], Value::as_str);
            format!(
                "{} score {} fit {} owner {} emails [{}]",
                v["stage"].as_str().unwrap_or(""),
                v["score"],
                v["fit"],
                v["owner"].as_str().unwrap_or("none"),
                emails
            )
        };
        let _ = writeln!(out, "  {}: {}", d.lead, show(&d.base));
        let _ = writeln!(
            out,
            "  {}  -> {}",
            " ".repeat(d.lead.len()),
            show(&d.candidate)
        );
        if let Some(f) = &d.first_difference {
            let _ = writeln!(
                out,
                "  {}     first difference in the {}: {} -> {}",
                " ".repeat(d.lead.len()),
                f.part,
                entry(&f.base),
                entry(&f.candidate)
            );
        }
    }
    if c.leads.len() > limit {
        let _ = writeln!(out, "  ... {} more (--limit)", c.leads.len() - limit);
    }
    out
}

/// A ledger entry or stage move in a few words.
fn entry(v: &Value) -> String {
    if v.is_null() {
        return "nothing".into();
    }
    let at = v["at"].as_str().unwrap_or("");
    match v.get("rule") {
        Some(rule) => format!(
            "{} {:+} at {at}",
            rule.as_str().unwrap_or(""),
            v["points"].as_i64().unwrap_or(0)
        ),
        None => format!(
            "{} -> {} at {at}",
            v["from"].as_str().unwrap_or(""),
            v["to"].as_str().unwrap_or("")
        ),
    }
}

/// The report for machines: one JSON line per differing lead, then
/// `{"summary": ...}`.
pub fn json_lines(c: &Comparison) -> String {
    let mut out = String::new();
    for d in &c.leads {
        out.push_str(&serde_json::to_string(d).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&json!({"summary": c.summary}).to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ruleset;
    use crate::sim::read_events_str;

    fn run(yaml: &str, events: &str) -> Vec<LeadState> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        let rules = Ruleset::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
        let mut world = World::new(Evaluator::new(&rules));
        let mut evs = read_events_str("events", events).unwrap();
        world.run(&mut evs, None);
        world.in_order().into_iter().cloned().collect()
    }

    const EVENTS: &str = r#"
{"id":"e1","lead":"a","type":"page_viewed","at":"2026-01-05T10:00:00Z"}
{"id":"e2","lead":"a","type":"page_viewed","at":"2026-01-05T11:00:00Z"}
{"id":"e3","lead":"b","type":"page_viewed","at":"2026-01-05T12:00:00Z"}
{"id":"e4","lead":"c","type":"form_submitted","at":"2026-01-05T13:00:00Z"}
"#;

    #[test]
    fn a_higher_bar_loses_mqls_and_names_where_each_lead_parts() {
        let now = run(
            "scoring:\n  - { name: view, on: page_viewed, points: 10 }\nstages:\n  mql: 'lead.score >= 10'\n",
            EVENTS,
        );
        let cand = run(
            "scoring:\n  - { name: view, on: page_viewed, points: 10, limit: { times: 1 } }\nstages:\n  mql: 'lead.score >= 20'\n",
            EVENTS,
        );
        let c = compare(
            &now.iter().collect::<Vec<_>>(),
            &cand.iter().collect::<Vec<_>>(),
        );
        let s = &c.summary;
        assert_eq!(s.leads, 3);
        assert_eq!((s.mql_gained, s.mql_lost), (0, 2));
        assert_eq!(
            s.stages["mql"],
            Pair {
                base: 2,
                candidate: 0
            }
        );
        assert_eq!(
            s.stages["subscriber"],
            Pair {
                base: 1,
                candidate: 3
            }
        );
        assert_eq!(s.score.0.median, 10);
        assert_eq!(s.score.1.median, 10);
        // a: 20 -> 10 (the second view earns nothing), b: only the stage.
        assert_eq!(c.leads.len(), 2);
        let a = &c.leads[0];
        assert_eq!(a.lead, "a");
        assert_eq!(a.base["score"], 20);
        assert_eq!(a.candidate["score"], 10);
        let f = a.first_difference.as_ref().unwrap();
        assert_eq!(f.part, "ledger");
        assert_eq!(f.base["event"], "e2");
        assert_eq!(f.candidate, Value::Null);
        let b = &c.leads[1];
        assert_eq!(b.first_difference.as_ref().unwrap().part, "transitions");
        let text = text(&c, 10);
        assert!(
            text.starts_with(
                "3 leads, 2 end differently with the candidate rules\nMQLs: 0 gained, 2 lost;"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "first difference in the ledger: view +10 at 2026-01-05T11:00:00Z -> nothing"
            ),
            "{text}"
        );
        let lines: Vec<Value> = json_lines(&c)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["summary"]["mql_lost"], 2);
    }

    #[test]
    fn both_runs_compare_as_the_worlds_do_and_stop_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let r = "scoring:\n  - { name: view, on: page_viewed, points: 10 }\nstages:\n";
        std::fs::write(
            dir.path().join("r.yaml"),
            format!("{r}  mql: 'lead.score >= 20'\n"),
        )
        .unwrap();
        let base = Ruleset::load(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("r.yaml"),
            format!("{r}  mql: 'lead.score >= 10'\n"),
        )
        .unwrap();
        let cand = Ruleset::load(dir.path()).unwrap();
        let events = read_events_str("events", EVENTS).unwrap();
        let go = AtomicBool::new(false);
        let c = run_both(
            Evaluator::new(&base),
            Evaluator::new(&cand),
            &events,
            None,
            &go,
        )
        .unwrap();
        assert_eq!((c.summary.mql_gained, c.summary.mql_lost), (1, 0));
        let stop = AtomicBool::new(true);
        assert!(run_both(
            Evaluator::new(&base),
            Evaluator::new(&cand),
            &events,
            None,
            &stop
        )
        .is_none());
    }

    #[test]
    fn the_same_rules_differ_nowhere() {
        let a = run(
            "scoring:\n  - { name: view, on: page_viewed, points: 10 }\n",
            EVENTS,
        );
        let c = compare(&a.iter().collect::<Vec<_>>(), &a.iter().collect::<Vec<_>>());
        assert_eq!(c.summary.differing, 0);
        assert!(c.leads.is_empty());
    }
}
