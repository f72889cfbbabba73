//! One test per semantic point of SPEC section 3, on small rulesets.

use super::*;
use crate::model::{time, EnrollmentStatus, Stage, SUBSCRIBED, UNSUBSCRIBED};
use crate::rules::Ruleset;
use crate::sim::World;
use serde_json::{json, Value};

pub(super) fn rules(yaml: &str) -> Ruleset {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    Ruleset::load(dir.path()).unwrap_or_else(|d| panic!("{d}"))
}

pub(super) fn t(s: &str) -> time::Timestamp {
    time::parse(s).unwrap()
}

pub(super) fn ev(id: &str, lead: &str, kind: &str, at: &str, extra: Value) -> Event {
    let mut v = json!({"id": id, "lead": lead, "type": kind, "at": at});
    if let Value::Object(m) = extra {
        v.as_object_mut().unwrap().extend(m);
    }
    Event::from_json(&v, None).unwrap()
}

pub(super) fn run<'r>(r: &'r Ruleset, mut events: Vec<Event>, until: Option<&str>) -> World<'r> {
    let mut w = World::new(Evaluator::new(r));
    w.keep_effects = true;
    w.run(&mut events, until.map(t));
    w
}

fn points(w: &World<'_>, lead: &str) -> Vec<(String, i64)> {
    w.leads[lead]
        .history
        .ledger
        .iter()
        .map(|e| (e.rule.clone(), e.points))
        .collect()
}

#[test]
fn limit_window_counts_entries_in_the_half_open_window() {
    let r = rules(
        "scoring:\n  - { name: visit, on: page_viewed, points: 1, limit: { times: 2, per: 1d } }\n",
    );
    let w = run(
        &r,
        vec![
            ev("1", "u", "page_viewed", "2026-01-01T00:00:00Z", json!({})),
            ev("2", "u", "page_viewed", "2026-01-01T01:00:00Z", json!({})),
            // Third within the day: refused.
            ev("3", "u", "page_viewed", "2026-01-01T23:59:59Z", json!({})),
            // Exactly one `per` after the first: the first has left (at - per, at].
            ev("4", "u", "page_viewed", "2026-01-02T00:00:00Z", json!({})),
            // The second is still inside: refused.
            ev("5", "u", "page_viewed", "2026-01-02T00:30:00Z", json!({})),
        ],
        None,
    );
    let got: Vec<_> = w.leads["u"]
        .history
        .ledger
        .iter()
        .map(|e| e.event.clone().unwrap())
        .collect();
    assert_eq!(got, vec!["1", "2", "4"]);
    assert_eq!(w.leads["u"].score, 3);
}

#[test]
fn lifetime_limit_and_any_event_rules_in_file_order() {
    let r = rules(
        "scoring:\n  - { name: any, on: '*', points: 1 }\n  - { name: demo, on: [form_submitted], points: 40, limit: { times: 1 } }\n  - { name: any2, on: '*', points: 2 }\n",
    );
    let w = run(
        &r,
        vec![
            ev(
                "1",
                "u",
                "form_submitted",
                "2026-01-01T00:00:00Z",
                json!({}),
            ),
            ev(
                "2",
                "u",
                "form_submitted",
                "2027-06-01T00:00:00Z",
                json!({}),
            ),
            ev("3", "u", "other", "2027-06-02T00:00:00Z", json!({})),
        ],
        None,
    );
    let names: Vec<_> = points(&w, "u").into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        names,
        vec!["any", "demo", "any2", "any", "any2", "any", "any2"]
    );
}

#[test]
fn duplicate_event_ids_are_ignored() {
    let r = rules("scoring:\n  - { name: v, on: x, points: 5 }\n");
    let w = run(
        &r,
        vec![
            ev("1", "u", "x", "2026-01-01T00:00:00Z", json!({})),
            ev("1", "u", "x", "2026-01-01T00:01:00Z", json!({})),
        ],
        None,
    );
    assert_eq!(w.leads["u"].score, 5);
}

#[test]
fn traits_merge_delete_and_set_email_and_consent() {
    let r = rules("stages:\n  lead: 'lead.email != \"\"'\n");
    let w = run(
        &r,
        vec![
            ev(
                "1",
                "u",
                "identify",
                "2026-01-01T00:00:00Z",
                json!({"traits": {"email": "a@b.c", "plan": "pro", "consent": "opted_in"}}),
            ),
            ev(
                "2",
                "u",
                "identify",
                "2026-01-02T00:00:00Z",
                json!({"traits": {"plan": null, "size": 3}}),
            ),
        ],
        None,
    );
    let l = &w.leads["u"];
    assert_eq!(l.email, "a@b.c");
    assert_eq!(l.consent, crate::model::Consent::OptedIn);
    assert_eq!(
        Value::Object(l.attributes.clone()),
        json!({"email": "a@b.c", "consent": "opted_in", "size": 3})
    );
    assert_eq!(l.last_activity_at, t("2026-01-02T00:00:00Z"));
    assert_eq!(l.stage, Stage::Lead);
}

#[test]
fn stages_move_forward_only_with_one_transition_when_skipping() {
    let r = rules(
        "scoring:\n  - { name: big, on: big, points: 100 }\n  - { name: drop, on: drop, points: -100 }\nstages:\n  lead: 'lead.email != \"\"'\n  mql: 'lead.score >= 50'\n  sql: 'lead.score >= 100'\n",
    );
    let w = run(
        &r,
        vec![
            ev("1", "u", "big", "2026-01-01T00:00:00Z", json!({})),
            ev("2", "u", "drop", "2026-01-02T00:00:00Z", json!({})),
        ],
        None,
    );
    let l = &w.leads["u"];
    assert_eq!(l.stage, Stage::Sql, "a falling score never demotes");
    assert_eq!(l.history.transitions.len(), 1);
    assert_eq!(
        (l.history.transitions[0].from, l.history.transitions[0].to),
        (Stage::Subscriber, Stage::Sql)
    );
}

#[test]
fn fit_is_recomputed_and_can_fall() {
    let r = rules("fit:\n  - { name: sw, if: 'lead.attributes.industry == \"software\"', points: 20 }\n  - { name: big, if: 'lead.attributes.employees >= 1000', points: 5 }\n");
    let mut w = World::new(Evaluator::new(&r));
    w.apply(
        &ev(
            "1",
            "u",
            "identify",
            "2026-01-01T00:00:00Z",
            json!({"traits": {"industry": "software", "employees": 5000}}),
        ),
        None,
    );
    assert_eq!(w.leads["u"].fit, 25);
    assert_eq!(
        w.leads["u"].fit_breakdown,
        vec![("sw".to_string(), 20), ("big".to_string(), 5)]
    );
    w.apply(
        &ev(
            "2",
            "u",
            "identify",
            "2026-01-02T00:00:00Z",
            json!({"traits": {"industry": null}}),
        ),
        None,
    );
    assert_eq!(w.leads["u"].fit, 5);
}

#[test]
fn conditions_reading_missing_keys_are_false_and_type_errors_are_noted() {
    let r = rules("scoring:\n  - { name: a, on: x, if: 'event.properties.nope == 1', points: 1 }\n  - { name: b, on: x, if: 'event.properties.path > 3', points: 1 }\n  - { name: c, on: x, points: 1 }\n  - { name: d, on: x, if: 'lead.score + 1', points: 1 }\n");
    let w = run(
        &r,
        vec![ev(
            "1",
            "u",
            "x",
            "2026-01-01T00:00:00Z",
            json!({"properties": {"path": "/a"}}),
        )],
        None,
    );
    assert_eq!(points(&w, "u"), vec![("c".to_string(), 1)]);
    let errors: Vec<_> = w
        .effects
        .iter()
        .filter_map(|(_, _, e)| match e {
            Effect::Note(Note::ConditionError { rule, .. }) => Some(rule.clone()),
            // Text compared with a number says which field holds text.
            Effect::Note(Note::NotANumber { rule, field, value }) => {
                Some(format!("{rule}: {field} = {value}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec!["b: event.properties.path = /a", "d"],
        "only the type errors are noted, not the missing key"
    );
}

/// Campaign `c` (its keys after `enroll`: `CAMPAIGN`) for leads with an
/// email; `SETTINGS` is the rest of `settings.email`.
const DRIP: &str = r#"
stages:
  lead: 'lead.email != ""'
templates:
  - { name: t1, subject: s, text: x }
  - { name: t2, subject: s, text: x }
  - { name: t3, subject: s, text: x }
campaigns:
  - name: c
    enroll: 'lead.stage == "lead"'
    CAMPAIGN
settings:
  email: { from: a@b.c SETTINGS }
"#;

/// The drip campaign's rules with these keys after `enroll` and email
/// settings.
fn drip_yaml(campaign: &str, settings: &str) -> String {
    DRIP.replace("CAMPAIGN", campaign)
        .replace("SETTINGS", settings)
}

pub(super) fn drip_campaign(campaign: &str, settings: &str) -> Ruleset {
    rules(&drip_yaml(campaign, settings))
}

/// The drip campaign with an `exit` and consent required.
fn drip(steps: &str, cap: &str) -> Ruleset {
    drip_campaign(
        &format!("exit: 'lead.attributes.done == true'\n    {steps}"),
        &format!(", require_consent: true {cap}"),
    )
}

fn identify(id: &str, at: &str, consent: &str) -> Event {
    ev(
        id,
        "u",
        "identify",
        at,
        json!({"traits": {"email": "u@x.io", "consent": consent}}),
    )
}

fn sent(w: &World<'_>) -> Vec<(String, String)> {
    w.leads["u"]
        .history
        .emails
        .iter()
        .map(|e| (e.template.clone(), time::format(&e.at)))
        .collect()
}

#[test]
fn drip_steps_follow_after_and_skip_false_steps_timing_from_the_skip() {
    let r = drip(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 2d, template: t2, if: 'lead.attributes.industry == \"software\"' }\n      - { after: 1d, template: t3 }",
        "",
    );
    let w = run(
        &r,
        vec![identify("1", "2026-01-05T10:00:00Z", "opted_in")],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(
        sent(&w),
        vec![
            ("t1".into(), "2026-01-05T10:00:00Z".into()),
            ("t3".into(), "2026-01-08T10:00:00Z".into())
        ]
    );
    assert_eq!(
        w.leads["u"].enrollments[0].status,
        EnrollmentStatus::Completed
    );
}

#[test]
fn drip_waits_for_consent_and_sends_on_the_event_that_grants_it() {
    let r = drip("steps:\n      - { after: 1h, template: t1 }", "");
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "unknown"),
            ev(
                "2",
                "u",
                "identify",
                "2026-01-07T08:30:00Z",
                json!({"traits": {"consent": "opted_in"}}),
            ),
        ],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-07T08:30:00Z".into())]);
}

#[test]
fn no_marketing_email_without_consent() {
    let r = drip("steps:\n      - { after: 0d, template: t1 }", "");
    let w = run(
        &r,
        vec![identify("1", "2026-01-05T10:00:00Z", "unknown")],
        Some("2026-03-01T00:00:00Z"),
    );
    assert!(sent(&w).is_empty());
    // Opting out exits the campaign for good.
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "unknown"),
            identify("2", "2026-01-06T10:00:00Z", "opted_out"),
        ],
        Some("2026-03-01T00:00:00Z"),
    );
    assert!(sent(&w).is_empty());
    assert_eq!(w.leads["u"].enrollments[0].status, EnrollmentStatus::Exited);
}

/// Issue 17 point 4: a client's `unsubscribed` event does what the link
/// does; `subscribed` (with how consent was given) opts in.
#[test]
fn consent_events_set_consent_as_the_link_does() {
    let r = drip(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 2d, template: t2 }",
        "",
    );
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "unknown"),
            ev(
                "2",
                "u",
                SUBSCRIBED,
                "2026-01-06T10:00:00Z",
                json!({"properties": {"source": "signup_form"}}),
            ),
            // Traits cannot contradict the event's type.
            ev(
                "3",
                "u",
                UNSUBSCRIBED,
                "2026-01-07T10:00:00Z",
                json!({"traits": {"consent": "opted_in"}}),
            ),
        ],
        Some("2026-03-01T00:00:00Z"),
    );
    let l = &w.leads["u"];
    assert_eq!(l.consent, crate::model::Consent::OptedOut);
    // Sent on the opt-in; the second step was due after the opt-out.
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-06T10:00:00Z".into())]);
    assert_eq!(l.enrollments[0].status, EnrollmentStatus::Exited);
    // An opt-in without its proof is refused when the event is read.
    let bad = json!({"id": "4", "lead": "u", "type": SUBSCRIBED, "at": "2026-01-08T10:00:00Z"});
    let e = Event::from_json(&bad, None).unwrap_err();
    assert_eq!(e.field, "properties.source");
}

#[test]
fn frequency_cap_postpones_to_the_first_moment_it_allows() {
    let r = drip(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 1h, template: t2 }\n      - { after: 1h, template: t3 }",
        ", frequency_cap: { max: 2, per: 1d }",
    );
    let w = run(
        &r,
        vec![identify("1", "2026-01-05T10:00:00Z", "opted_in")],
        Some("2026-02-01T00:00:00Z"),
    );
    // t3 is due at 12:00, but t1 (10:00) and t2 (11:00) fill the cap until
    // t1 leaves the window at 10:00 the next day.
    assert_eq!(
        sent(&w),
        vec![
            ("t1".into(), "2026-01-05T10:00:00Z".into()),
            ("t2".into(), "2026-01-05T11:00:00Z".into()),
            ("t3".into(), "2026-01-06T10:00:00Z".into()),
        ]
    );
}

#[test]
fn window_in_a_timezone_postpones_to_its_next_minute() {
    let r = rules(&drip_yaml(
        "window: \"* 9-16 * * Mon-Fri\"\n    timezone: Europe/Berlin\n    steps:\n      - { after: 0d, template: t1 }",
        ", require_consent: true",
    ));
    // Saturday 2026-01-10 12:00 UTC: next window minute is Monday 09:00 Berlin (08:00 UTC).
    let w = run(
        &r,
        vec![identify("1", "2026-01-10T12:00:00Z", "opted_in")],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-12T08:00:00Z".into())]);
    // Inside the window: sent at once, to the second.
    let w = run(
        &r,
        vec![identify("1", "2026-01-12T15:59:30Z", "opted_in")],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-12T15:59:30Z".into())]);
}

#[test]
fn lead_timezone_comes_from_attributes() {
    let r = rules(&drip_yaml(
        "window: \"* 9-16 * * *\"\n    timezone: lead\n    steps:\n      - { after: 0d, template: t1 }",
        ", require_consent: true",
    ));
    let e = ev(
        "1",
        "u",
        "identify",
        "2026-01-12T02:00:00Z",
        json!({"traits": {"email": "u@x.io", "consent": "opted_in", "timezone": "America/New_York"}}),
    );
    let w = run(&r, vec![e], Some("2026-02-01T00:00:00Z"));
    // 09:00 in New York is 14:00 UTC in January.
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-12T14:00:00Z".into())]);
}

#[test]
fn exit_condition_stops_the_drip() {
    let r = drip(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 2d, template: t2 }",
        "",
    );
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "opted_in"),
            ev(
                "2",
                "u",
                "identify",
                "2026-01-06T10:00:00Z",
                json!({"traits": {"done": true}}),
            ),
        ],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(sent(&w).len(), 1);
    assert_eq!(w.leads["u"].enrollments[0].status, EnrollmentStatus::Exited);
}

const ROUTING: &str = r#"
scoring:
  - { name: hot, on: hot, points: 100 }
stages:
  sql: 'lead.score >= 100'
routing:
  owners:
    - { id: a, email: a@x.io, capacity: CAPA, weight: 2 }
    - { id: b, email: b@x.io }
    - { id: c, email: c@x.io }
  rules:
    - { name: r, owners: [a, b, c], strategy: STRATEGY }
  SLA
"#;

fn routing(strategy: &str, cap_a: u32, sla: &str) -> Ruleset {
    rules(
        &ROUTING
            .replace("STRATEGY", strategy)
            .replace("CAPA", &cap_a.to_string())
            .replace("SLA", sla),
    )
}

fn hot_leads(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            ev(
                &format!("e{i}"),
                &format!("l{i:02}"),
                "hot",
                &format!("2026-01-01T00:{i:02}:00Z"),
                json!({}),
            )
        })
        .collect()
}

fn owners(w: &World<'_>) -> Vec<String> {
    w.in_order()
        .iter()
        .map(|l| l.owner.clone().unwrap_or_else(|| "-".into()))
        .collect()
}

#[test]
fn round_robin_rotates_and_skips_owners_at_capacity() {
    let r = routing("round_robin", 1, "");
    let w = run(&r, hot_leads(5), None);
    assert_eq!(owners(&w), vec!["a", "b", "c", "b", "c"]);
    assert_eq!(w.book.open_count("a"), 1);
    assert_eq!(w.leads["l00"].history.assignments[0].rule, "r");
}

#[test]
fn weighted_is_smooth_weighted_round_robin() {
    let r = routing("weighted", 100, "");
    let w = run(&r, hot_leads(8), None);
    // Weights 2:1:1 → a b c a, a b c a.
    assert_eq!(owners(&w), vec!["a", "b", "c", "a", "a", "b", "c", "a"]);
}

#[test]
fn least_loaded_picks_fewest_open_with_ties_in_list_order() {
    let r = routing("least_loaded", 100, "");
    let mut events = hot_leads(3);
    // l00 (owner a) is won: a has no open lead again.
    events.push(ev(
        "w",
        "l00",
        "sales_feedback",
        "2026-01-01T00:10:00Z",
        json!({"properties": {"status": "won"}}),
    ));
    events.push(ev("x", "l09", "hot", "2026-01-01T00:11:00Z", json!({})));
    let w = run(&r, events, None);
    assert_eq!(owners(&w), vec!["a", "b", "c", "a"]);
    assert_eq!(w.leads["l00"].stage, Stage::Customer);
}

#[test]
fn claim_offers_and_the_first_claim_wins() {
    let r = routing("claim", 100, "");
    let mut events = hot_leads(1);
    events.push(ev(
        "c1",
        "l00",
        "sales_claim",
        "2026-01-01T01:00:00Z",
        json!({"properties": {"owner": "c"}}),
    ));
    events.push(ev(
        "c2",
        "l00",
        "sales_claim",
        "2026-01-01T01:00:01Z",
        json!({"properties": {"owner": "b"}}),
    ));
    let w = run(&r, events, None);
    assert_eq!(w.leads["l00"].owner.as_deref(), Some("c"));
    let offers = w
        .effects
        .iter()
        .filter(|(_, _, e)| matches!(e, Effect::OfferToOwners { .. }))
        .count();
    assert_eq!(offers, 1);
    let refused: Vec<_> = w
        .effects
        .iter()
        .filter_map(|(_, _, e)| match e {
            Effect::Note(Note::ClaimRefused { owner, .. }) => Some(owner.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec!["b"]);
}

#[test]
fn sla_breach_notifies_and_reassigns_to_the_next_owner() {
    let r = routing(
        "round_robin",
        100,
        "sla: { accept_within: 1h, notify: boss@x.io, on_breach: reassign, max_reassign: 3 }",
    );
    let w = run(&r, hot_leads(1), Some("2026-01-01T03:30:00Z"));
    let l = &w.leads["l00"];
    // a at 00:00, breach at 01:00 → b, breach at 02:00 → c, breach at 03:00 → a.
    let seq: Vec<_> = l
        .history
        .assignments
        .iter()
        .map(|a| (a.owner.as_str(), time::format(&a.at)))
        .collect();
    assert_eq!(
        seq,
        vec![
            ("a", "2026-01-01T00:00:00Z".to_string()),
            ("b", "2026-01-01T01:00:00Z".to_string()),
            ("c", "2026-01-01T02:00:00Z".to_string()),
            ("a", "2026-01-01T03:00:00Z".to_string()),
        ]
    );
    let notices = w
        .effects
        .iter()
        .filter(|(_, _, e)| matches!(e, Effect::NotifySlaBreach { to, .. } if to == "boss@x.io"))
        .count();
    assert_eq!(notices, 3);
    assert_eq!(
        w.book.open_count("a") + w.book.open_count("b") + w.book.open_count("c"),
        1
    );
}

#[test]
fn feedback_in_time_stops_the_sla() {
    let r = routing(
        "round_robin",
        100,
        "sla: { accept_within: 1h, on_breach: reassign }",
    );
    let mut events = hot_leads(1);
    events.push(ev(
        "f",
        "l00",
        "sales_feedback",
        "2026-01-01T00:30:00Z",
        json!({"properties": {"status": "accepted"}}),
    ));
    let w = run(&r, events, Some("2026-01-02T00:00:00Z"));
    let l = &w.leads["l00"];
    assert_eq!(l.history.assignments.len(), 1);
    assert_eq!(l.stage, Stage::Opportunity);
    assert!(!w
        .effects
        .iter()
        .any(|(_, _, e)| matches!(e, Effect::Note(Note::SlaBreached { .. }))));
}

/// The drip campaign `c` with `steps`, a `hot` event that makes an SQL, and
/// one owner whose rejection recycles the lead with 5 points.
fn recycling(steps: &str) -> String {
    format!(
        "{}\nrouting:\n  owners: [{{ id: a, email: a@x.io }}]\n  rules: [{{ name: r, owners: [a], strategy: round_robin }}]\n  recycle_score: 5\n",
        drip_yaml(&format!("exit: 'lead.attributes.done == true'\n    {steps}"), ", require_consent: true")
            .replace("stages:\n  lead: 'lead.email != \"\"'", "scoring:\n  - { name: hot, on: hot, points: 100 }\nstages:\n  lead: 'lead.email != \"\"'\n  sql: 'lead.score >= 100'")
    )
}

/// A lead recycled while enrolled finishes that enrollment, then enrolls
/// again in its new cycle: each email names the cycle of its enrollment
/// (its Message-ID does), so the two welcomes are two messages.
#[test]
fn emails_name_the_cycle_of_their_enrollment_across_a_recycle() {
    let r = rules(&recycling(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 2d, template: t2 }",
    ));
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "opted_in"),
            ev("2", "u", "hot", "2026-01-05T11:00:00Z", json!({})),
            ev(
                "3",
                "u",
                "sales_feedback",
                "2026-01-06T11:00:00Z",
                json!({"properties": {"status": "rejected"}}),
            ),
            ev("4", "u", "page_viewed", "2026-01-09T10:00:00Z", json!({})),
        ],
        Some("2026-01-10T00:00:00Z"),
    );
    let emails: Vec<(u32, usize)> = w
        .effects
        .iter()
        .filter_map(|(_, _, e)| match e {
            Effect::SendEmail { cycle, step, .. } => Some((*cycle, *step)),
            _ => None,
        })
        .collect();
    // t1 and t2 of the first enrollment (t2 after the recycle), then t1 of
    // the second.
    assert_eq!(emails, vec![(0, 1), (0, 2), (1, 1)]);
    assert_eq!(w.leads["u"].cycle, 1);
}

/// Issue 17: a rule can tell a recycled lead (`lead.recycled_count`).
#[test]
fn rules_see_how_often_a_lead_was_recycled() {
    let r = rules(
        "scoring:\n  - { name: hot, on: hot, points: 100 }\n  - { name: second_chance, on: page_viewed, if: 'lead.recycled_count >= 1', points: 7 }\nstages:\n  sql: 'lead.score >= 100'\nrouting:\n  owners: [{ id: a, email: a@x.io }]\n  rules: [{ name: r, owners: [a], strategy: round_robin }]\n",
    );
    let w = run(
        &r,
        vec![
            ev("1", "u", "page_viewed", "2026-01-05T10:00:00Z", json!({})),
            ev("2", "u", "hot", "2026-01-05T11:00:00Z", json!({})),
            ev(
                "3",
                "u",
                "sales_feedback",
                "2026-01-06T11:00:00Z",
                json!({"properties": {"status": "rejected"}}),
            ),
            ev("4", "u", "page_viewed", "2026-01-06T12:00:00Z", json!({})),
        ],
        None,
    );
    let names: Vec<_> = points(&w, "u").into_iter().map(|(r, _)| r).collect();
    assert_eq!(names, vec!["hot", "recycle", "second_chance"]);
}

#[test]
fn rejected_leads_are_recycled_and_nurtured_again() {
    let r = rules(
        &recycling("steps:\n      - { after: 0d, template: t1 }").replace(
            "exit: 'lead.attributes.done == true'",
            "exit: 'lead.stage == \"sql\"'",
        ),
    );
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "opted_in"),
            ev("2", "u", "hot", "2026-01-05T11:00:00Z", json!({})),
            ev(
                "3",
                "u",
                "sales_feedback",
                "2026-01-06T11:00:00Z",
                json!({"properties": {"status": "rejected", "reason": "no budget"}}),
            ),
        ],
        Some("2026-01-07T00:00:00Z"),
    );
    let l = &w.leads["u"];
    assert_eq!(l.stage, Stage::Lead);
    assert_eq!(l.owner, None);
    assert_eq!(l.score, 5);
    let last = l.history.ledger.last().unwrap();
    assert_eq!(
        (last.rule.as_str(), last.points, last.event.as_deref()),
        ("recycle", -95, Some("3"))
    );
    assert_eq!(w.book.open_count("a"), 0);
    // Nurtured again: a second enrollment, in the new cycle, sent its welcome.
    assert_eq!(l.enrollments.len(), 2);
    assert_eq!(l.cycle, 1);
    assert_eq!(l.enrollments[1].cycle, 1);
    assert_eq!(sent(&w).len(), 2);
    let hooks: Vec<_> = l
        .history
        .transitions
        .iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        hooks,
        vec![
            (Stage::Subscriber, Stage::Lead),
            (Stage::Lead, Stage::Sql),
            (Stage::Sql, Stage::Lead)
        ]
    );
}

#[test]
fn inactivity_decay_runs_on_schedule_for_quiet_leads_only() {
    let r = rules(
        "scoring:\n  - { name: v, on: v, points: 20 }\n  - name: decay\n    schedule: \"0 3 * * *\"\n    if: 'now - lead.last_activity_at > duration(\"72h\")'\n    points: -5\n",
    );
    let w = run(
        &r,
        vec![
            ev("1", "quiet", "v", "2026-01-01T12:00:00Z", json!({})),
            ev("2", "busy", "v", "2026-01-01T12:00:00Z", json!({})),
            ev("3", "busy", "v", "2026-01-04T12:00:00Z", json!({})),
        ],
        Some("2026-01-06T12:00:00Z"),
    );
    // quiet: >72h idle at 01-05 03:00 and 01-06 03:00.
    let decays: Vec<_> = w.leads["quiet"]
        .history
        .ledger
        .iter()
        .filter(|e| e.rule == "decay")
        .map(|e| (time::format(&e.at), e.event.clone()))
        .collect();
    assert_eq!(
        decays,
        vec![
            ("2026-01-05T03:00:00Z".to_string(), None),
            ("2026-01-06T03:00:00Z".to_string(), None)
        ]
    );
    assert!(w.leads["busy"]
        .history
        .ledger
        .iter()
        .all(|e| e.rule != "decay"));
}

#[test]
fn same_input_same_output() {
    let r = rules(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../rules/scoring.yaml"
        ))
        .unwrap(),
    );
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/events.jsonl"
    ))
    .unwrap();
    let out = || {
        let evs = crate::sim::read_events_str("e", &text).unwrap();
        let w = run(&r, evs, Some("2026-03-01T00:00:00Z"));
        w.in_order()
            .into_iter()
            .map(crate::sim::lead_line)
            .collect::<Vec<_>>()
    };
    assert_eq!(out(), out());
}

/// A host that answers like a plugin would, to test how effects apply.
struct FixedPlugin(Result<Vec<PluginEffect>, String>);

impl PluginHost for FixedPlugin {
    fn call(
        &self,
        _: &crate::rules::Plugin,
        _: &LeadState,
        _: &Event,
    ) -> Result<Vec<PluginEffect>, String> {
        self.0.clone()
    }
}

#[test]
fn plugin_effects_apply_and_failures_only_get_noted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"\0asm").unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "plugins:\n  - { name: size, wasm: p.wasm, on: identify }\nscoring:\n  - { name: after, on: identify, points: 1 }\n",
    )
    .unwrap();
    let r = Ruleset::load(dir.path()).unwrap();
    let host = FixedPlugin(Ok(vec![
        PluginEffect::Points {
            points: 7,
            reason: "enterprise".into(),
        },
        PluginEffect::SetAttribute {
            key: "segment".into(),
            value: json!("ent"),
        },
        PluginEffect::Tag { tag: "big".into() },
    ]));
    let e = ev("1", "u", "identify", "2026-01-01T00:00:00Z", json!({}));
    let d = Evaluator::with_plugins(&r, &host).on_event(None, &mut Book::default(), &e);
    assert_eq!(d.lead.score, 8);
    let entry = d
        .lead
        .history
        .ledger
        .iter()
        .find(|l| l.rule == "size")
        .unwrap();
    assert_eq!(entry.reason.as_deref(), Some("enterprise"));
    assert_eq!(d.lead.attributes["segment"], json!("ent"));
    assert_eq!(d.lead.attributes["tags"], json!(["big"]));

    let failing = FixedPlugin(Err("out of fuel".into()));
    let d = Evaluator::with_plugins(&r, &failing).on_event(None, &mut Book::default(), &e);
    assert_eq!(d.lead.score, 1, "the other rules still apply");
    assert!(d.effects.contains(&Effect::Note(Note::PluginFailed {
        plugin: "size".into(),
        error: "out of fuel".into()
    })));
}

#[test]
fn a_hard_bounce_ends_drips_until_the_email_changes() {
    let r = drip(
        "steps:\n      - { after: 0d, template: t1 }\n      - { after: 1d, template: t2 }\n      - { after: 1d, template: t3 }",
        "",
    );
    let bounce = |id: &str, at: &str, kind: &str| {
        ev(
            id,
            "u",
            BOUNCED,
            at,
            json!({"properties": {"bounce": kind, "message_id": "<m@x>"}}),
        )
    };
    // A soft bounce changes nothing; the hard one exits the campaign.
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "opted_in"),
            bounce("2", "2026-01-05T11:00:00Z", "soft"),
            bounce("3", "2026-01-05T12:00:00Z", "hard"),
        ],
        Some("2026-02-01T00:00:00Z"),
    );
    assert_eq!(sent(&w), vec![("t1".into(), "2026-01-05T10:00:00Z".into())]);
    let l = &w.leads["u"];
    assert!(l.undeliverable);
    assert_eq!(l.enrollments[0].status, EnrollmentStatus::Exited);
    // A new address lifts the suppression.
    let w = run(
        &r,
        vec![
            identify("1", "2026-01-05T10:00:00Z", "opted_in"),
            bounce("3", "2026-01-05T12:00:00Z", "hard"),
            ev(
                "4",
                "u",
                "identify",
                "2026-01-06T10:00:00Z",
                json!({"traits": {"email": "new@x.io"}}),
            ),
        ],
        None,
    );
    assert!(!w.leads["u"].undeliverable);
}

#[test]
fn webhooks_fire_for_every_lead_event_with_what_changed() {
    let yaml = format!(
        "{}\nwebhooks:\n  - name: crm\n    url: https://crm.example.com/hook\n    on: [lead.stage_changed, lead.assigned, lead.sla_breached, lead.recycled, lead.unsubscribed]\n",
        ROUTING
            .replace("STRATEGY", "round_robin")
            .replace("CAPA", "100")
            .replace("SLA", "sla: { accept_within: 1h, on_breach: reassign }")
    );
    let r = rules(&yaml);
    let mut events = hot_leads(1);
    events.push(ev(
        "f",
        "l00",
        "sales_feedback",
        "2026-01-01T01:30:00Z",
        json!({"properties": {"status": "lost", "reason": "no budget"}}),
    ));
    events.push(ev(
        "u",
        "l00",
        "identify",
        "2026-01-01T02:00:00Z",
        json!({"traits": {"consent": "opted_out"}}),
    ));
    let w = run(&r, events, Some("2026-01-01T03:00:00Z"));
    let hooks: Vec<(&str, Value)> = w
        .effects
        .iter()
        .filter_map(|(_, _, e)| match e {
            Effect::Webhook {
                webhook,
                event,
                detail,
            } => {
                assert_eq!(webhook, "crm");
                Some((event.as_str(), serde_json::to_value(detail).unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        hooks,
        vec![
            (
                "lead.stage_changed",
                json!({"from": "subscriber", "to": "sql"})
            ),
            ("lead.assigned", json!({"owner": "a", "rule": "r"})),
            // 01:00: a let the SLA pass; b gets the lead.
            ("lead.sla_breached", json!({"owner": "a"})),
            ("lead.assigned", json!({"owner": "b", "rule": "r"})),
            ("lead.stage_changed", json!({"from": "sql", "to": "lead"})),
            ("lead.recycled", json!({"reason": "no budget"})),
            ("lead.unsubscribed", json!({})),
        ]
    );
}

#[test]
fn claim_pool_offers_record_since_when() {
    let r = routing("claim", 100, "");
    let mut events = hot_leads(1);
    let w = run(&r, events.clone(), None);
    assert_eq!(w.leads["l00"].offered_at, Some(t("2026-01-01T00:00:00Z")));
    events.push(ev(
        "c1",
        "l00",
        "sales_claim",
        "2026-01-01T01:00:00Z",
        json!({"properties": {"owner": "b"}}),
    ));
    let w = run(&r, events, None);
    assert_eq!(w.leads["l00"].offered_at, None);
    assert!(w.leads["l00"].offered_to.is_empty());
}

#[test]
fn a_plugin_effect_that_could_not_be_stored_fails_the_call_and_none_applies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"\0asm").unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "plugins:\n  - { name: p, wasm: p.wasm, on: identify }\n",
    )
    .unwrap();
    let r = Ruleset::load(dir.path()).unwrap();
    let deep = (0..127).fold(json!(1), |v, _| json!([v]));
    let good = PluginEffect::Points {
        points: 5,
        reason: "fine".into(),
    };
    let cases = [
        (
            PluginEffect::SetAttribute {
                key: "deep".into(),
                value: deep,
            },
            "nested more than 32 levels deep",
        ),
        (
            PluginEffect::Points {
                points: 1,
                reason: "a\u{0}b".into(),
            },
            "NUL",
        ),
        (
            PluginEffect::Points {
                points: 1,
                reason: "x".repeat(crate::model::bounds::MAX_TEXT_BYTES + 1),
            },
            "longer than 4096 bytes",
        ),
        (
            PluginEffect::SetAttribute {
                key: "k\u{0}".into(),
                value: json!(1),
            },
            "NUL",
        ),
        (
            PluginEffect::Tag {
                tag: "t\u{0}".into(),
            },
            "NUL",
        ),
        (
            PluginEffect::Tag {
                tag: "t".repeat(crate::model::bounds::MAX_ID_BYTES + 1),
            },
            "longer than 1024 bytes",
        ),
    ];
    let e = ev("1", "u", "identify", "2026-01-01T00:00:00Z", json!({}));
    for (bad, expect) in cases {
        let host = FixedPlugin(Ok(vec![good.clone(), bad.clone()]));
        let d = Evaluator::with_plugins(&r, &host).on_event(None, &mut Book::default(), &e);
        assert_eq!(
            d.lead.score, 0,
            "{bad:?}: the good effect did not apply either"
        );
        assert!(d.lead.attributes.is_empty(), "{bad:?}");
        let error = d
            .effects
            .iter()
            .find_map(|x| match x {
                Effect::Note(Note::PluginFailed { error, .. }) => Some(error.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{bad:?}: no plugin_failed note"));
        assert!(
            error.starts_with("invalid output: effect 1 (") && error.contains(expect),
            "{bad:?}: {error}"
        );
        // What is noted can itself be stored.
        assert!(crate::model::bounds::check_text("error", &error, 8192).is_ok());
    }
}

/// A state stored before version 2 held the lead's whole history; read
/// back, it gives that history and the memory the evaluator would have
/// built while making it (once trimmed to the rules, as the next input does).
#[test]
fn a_state_stored_with_its_whole_history_reads_back_with_the_same_memory() {
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v1");
    let r = Ruleset::load(&fx.join("rules")).unwrap_or_else(|d| panic!("{d}"));
    let text = std::fs::read_to_string(fx.join("events.jsonl")).unwrap();
    let events = crate::sim::read_events_str("events.jsonl", &text).unwrap();
    let w = run(&r, events, Some("2026-12-01T00:00:00Z"));
    let mut with_sends = 0;
    for lead in w.leads.values() {
        let h = &lead.history;
        let mut old = serde_json::to_value(lead).unwrap();
        let m = old.as_object_mut().unwrap();
        m.remove("memory");
        m.insert("ledger".into(), serde_json::to_value(&h.ledger).unwrap());
        m.insert(
            "transitions".into(),
            serde_json::to_value(&h.transitions).unwrap(),
        );
        m.insert("emails".into(), serde_json::to_value(&h.emails).unwrap());
        m.insert(
            "assignments".into(),
            serde_json::to_value(&h.assignments).unwrap(),
        );
        m.insert(
            "feedback".into(),
            serde_json::to_value(&h.feedback).unwrap(),
        );
        let (mut back, history) = crate::rows::parse_stored(&old.to_string()).unwrap();
        assert_eq!(history.as_ref(), Some(h), "{}", lead.id);
        back.memory.fit_to(|n| r.limit_times(n), r.cap_max());
        assert_eq!(back.memory, lead.memory, "{}", lead.id);
        with_sends += usize::from(!lead.memory.sends.is_empty());
        // A state stored since reads back as it was, with no history.
        let (now, none) = crate::rows::parse_stored(&serde_json::to_string(lead).unwrap()).unwrap();
        assert_eq!((now.memory, none), (lead.memory.clone(), None));
    }
    assert!(with_sends > 0, "the cap's memory is exercised");
}
