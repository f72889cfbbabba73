//! Issue 17 point 6, what a marketer asked for: drip steps timed from the
//! enrollment (`at`), a sending window in the zone of any attribute, named
//! `lists:` in conditions, and numbers sent as text.

use super::tests::{ev, rules, t};
use super::*;
use crate::model::{time, Stage};
use crate::sim::World;
use serde_json::{json, Value};

fn run<'r>(r: &'r crate::rules::Ruleset, events: Vec<Event>, until: &str) -> World<'r> {
    super::tests::run(r, events, Some(until))
}

fn drip(campaign: &str, settings: &str) -> crate::rules::Ruleset {
    super::tests::drip_campaign(campaign, settings)
}

fn identify(id: &str, lead: &str, at: &str, traits: Value) -> Event {
    let mut all = json!({"email": format!("{lead}@x.io"), "consent": "opted_in"});
    all.as_object_mut()
        .unwrap()
        .extend(traits.as_object().cloned().unwrap_or_default());
    ev(id, lead, "identify", at, json!({ "traits": all }))
}

fn sent(w: &World<'_>, lead: &str) -> Vec<(String, String)> {
    w.leads[lead]
        .history
        .emails
        .iter()
        .map(|e| (e.template.clone(), time::format(&e.at)))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const WEEKDAYS: &str = "window: \"* 9-16 * * Mon-Fri\"\n    ";

/// "Day 0, 3 and 7" written as such: a step postponed by the window does
/// not push the ones after it, as `after` does.
#[test]
fn at_steps_count_from_enrollment_so_a_postponed_step_does_not_delay_the_next() {
    // Wednesday 10:00 UTC; day 3 is a Saturday, out of the window.
    let enroll = vec![identify("1", "u", "2026-01-07T10:00:00Z", json!({}))];
    let at = drip(
        &format!("{WEEKDAYS}steps:\n      - {{ at: 0d, template: t1 }}\n      - {{ at: 3d, template: t2 }}\n      - {{ at: 7d, template: t3 }}"),
        "",
    );
    let w = run(&at, enroll.clone(), "2026-01-13T00:00:00Z");
    // Step 2 went out on Monday; step 3 is still due on day 7.
    let e = &w.leads["u"].enrollments[0];
    assert_eq!(
        (e.next_step, e.due_at),
        (2, Some(t("2026-01-14T10:00:00Z")))
    );
    let w = run(&at, enroll.clone(), "2026-02-01T00:00:00Z");
    assert_eq!(
        sent(&w, "u"),
        pairs(&[
            ("t1", "2026-01-07T10:00:00Z"),
            ("t2", "2026-01-12T09:00:00Z"),
            ("t3", "2026-01-14T10:00:00Z"),
        ])
    );
    // The same days as `after`: the weekend moves step 3 too.
    let after = drip(
        &format!("{WEEKDAYS}steps:\n      - {{ after: 0d, template: t1 }}\n      - {{ after: 3d, template: t2 }}\n      - {{ after: 4d, template: t3 }}"),
        "",
    );
    let w = run(&after, enroll, "2026-02-01T00:00:00Z");
    assert_eq!(w.leads["u"].history.emails[2].at, t("2026-01-16T09:00:00Z"));
}

#[test]
fn an_at_step_is_never_due_before_the_step_above_and_a_skip_keeps_the_schedule() {
    // Friday: day 1 (Saturday) waits for Monday 09:00, and day 2 (Sunday)
    // cannot go before it: both go out on Monday 09:00, in order.
    let r = drip(
        &format!("{WEEKDAYS}steps:\n      - {{ at: 0d, template: t1 }}\n      - {{ at: 1d, template: t2 }}\n      - {{ at: 2d, template: t3 }}"),
        "",
    );
    let w = run(
        &r,
        vec![identify("1", "u", "2026-01-09T10:00:00Z", json!({}))],
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        sent(&w, "u"),
        pairs(&[
            ("t1", "2026-01-09T10:00:00Z"),
            ("t2", "2026-01-12T09:00:00Z"),
            ("t3", "2026-01-12T09:00:00Z"),
        ])
    );
    // A skipped step changes nothing for the next: day 5 is day 5.
    let r = drip(
        "steps:\n      - { at: 0d, template: t1 }\n      - { at: 2d, template: t2, if: 'lead.attributes.industry == \"software\"' }\n      - { at: 5d, template: t3 }",
        "",
    );
    let w = run(
        &r,
        vec![identify("1", "u", "2026-01-05T10:00:00Z", json!({}))],
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        sent(&w, "u"),
        pairs(&[
            ("t1", "2026-01-05T10:00:00Z"),
            ("t3", "2026-01-10T10:00:00Z")
        ])
    );
}

/// A lead that opts in late has every step whose day has passed due at
/// once, in order; the frequency cap is what spaces them.
#[test]
fn steps_whose_day_passed_while_waiting_for_consent_follow_in_order() {
    let r = drip(
        "steps:\n      - { at: 0d, template: t1 }\n      - { at: 3d, template: t2 }\n      - { at: 7d, template: t3 }",
        ", require_consent: true, frequency_cap: { max: 1, per: 1d }",
    );
    let w = run(
        &r,
        vec![
            identify(
                "1",
                "u",
                "2026-01-05T10:00:00Z",
                json!({"consent": "unknown"}),
            ),
            ev(
                "2",
                "u",
                "identify",
                "2026-01-20T10:00:00Z",
                json!({"traits": {"consent": "opted_in"}}),
            ),
        ],
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        sent(&w, "u"),
        pairs(&[
            ("t1", "2026-01-20T10:00:00Z"),
            ("t2", "2026-01-21T10:00:00Z"),
            ("t3", "2026-01-22T10:00:00Z"),
        ])
    );
}

/// A recycled lead enrolls again: its `at` steps count from that enrollment.
#[test]
fn at_counts_from_each_enrollment_across_a_recycle() {
    let r = rules(
        r#"
scoring:
  - { name: hot, on: hot, points: 100 }
stages:
  lead: 'lead.email != ""'
  sql: 'lead.score >= 100'
templates:
  - { name: t1, subject: s, text: x }
  - { name: t2, subject: s, text: x }
campaigns:
  - name: c
    enroll: 'lead.stage == "lead"'
    steps:
      - { at: 0d, template: t1 }
      - { at: 2d, template: t2 }
routing:
  owners: [{ id: a, email: a@x.io }]
  rules: [{ name: r, owners: [a], strategy: round_robin }]
  recycle_score: 5
settings:
  email: { from: a@b.c }
"#,
    );
    let w = run(
        &r,
        vec![
            identify("1", "u", "2026-01-05T10:00:00Z", json!({})),
            ev("2", "u", "hot", "2026-01-05T11:00:00Z", json!({})),
            ev(
                "3",
                "u",
                "sales_feedback",
                "2026-01-06T11:00:00Z",
                json!({"properties": {"status": "rejected"}}),
            ),
            // The first enrollment has completed: the lead enrolls again.
            ev("4", "u", "page_viewed", "2026-01-09T10:00:00Z", json!({})),
        ],
        "2026-01-12T00:00:00Z",
    );
    assert_eq!(
        sent(&w, "u"),
        pairs(&[
            ("t1", "2026-01-05T10:00:00Z"),
            ("t2", "2026-01-07T10:00:00Z"),
            ("t1", "2026-01-09T10:00:00Z"),
            ("t2", "2026-01-11T10:00:00Z"),
        ])
    );
}

/// `timezone: lead.attributes.<key>` reads that attribute; one that is not
/// an IANA zone means UTC, and `attributes.timezone` is not looked at.
#[test]
fn a_window_zone_comes_from_the_attribute_named() {
    let r = drip(
        "window: \"* 9-16 * * *\"\n    timezone: lead.attributes.tz\n    steps:\n      - { after: 0d, template: t1 }",
        "",
    );
    let at = "2026-01-12T02:00:00Z";
    let w = run(
        &r,
        vec![
            identify("1", "ny", at, json!({"tz": "America/New_York"})),
            identify("2", "bad", at, json!({"tz": "Mars/Olympus"})),
            identify("3", "other", at, json!({"timezone": "America/New_York"})),
        ],
        "2026-02-01T00:00:00Z",
    );
    // 09:00 in New York is 14:00 UTC in January.
    assert_eq!(sent(&w, "ny"), pairs(&[("t1", "2026-01-12T14:00:00Z")]));
    assert_eq!(sent(&w, "bad"), pairs(&[("t1", "2026-01-12T09:00:00Z")]));
    assert_eq!(sent(&w, "other"), pairs(&[("t1", "2026-01-12T09:00:00Z")]));
}

/// One list, read by every kind of condition.
#[test]
fn lists_are_read_by_scoring_fit_stages_campaigns_and_routing() {
    let r = rules(
        r#"
lists:
  dach: [DE, AT, CH]
scoring:
  - { name: dach-visit, on: page_viewed, if: 'lead.attributes.country in lists.dach', points: 5 }
  - { name: hot, on: hot, points: 100 }
fit:
  - { name: dach, if: 'lead.attributes.country in lists.dach', points: 20 }
stages:
  lead: 'lead.attributes.country in lists.dach'
  sql: 'lead.score >= 100'
templates:
  - { name: t1, subject: s, text: x }
campaigns:
  - name: c
    enroll: 'lead.attributes.country in lists.dach'
    steps: [{ after: 0d, template: t1 }]
routing:
  owners: [{ id: a, email: a@x.io }, { id: b, email: b@x.io }]
  rules:
    - { name: dach, if: 'lead.attributes.country in lists.dach', owners: [a], strategy: round_robin }
    - { name: rest, owners: [b], strategy: round_robin }
settings:
  email: { from: a@b.c, require_consent: false }
"#,
    );
    let mut events = Vec::new();
    for (lead, country) in [("at", "AT"), ("fr", "FR")] {
        events.push(identify(
            &format!("{lead}1"),
            lead,
            "2026-01-05T10:00:00Z",
            json!({ "country": country }),
        ));
        events.push(ev(
            &format!("{lead}2"),
            lead,
            "page_viewed",
            "2026-01-05T11:00:00Z",
            json!({}),
        ));
        events.push(ev(
            &format!("{lead}3"),
            lead,
            "hot",
            "2026-01-05T12:00:00Z",
            json!({}),
        ));
    }
    let w = run(&r, events, "2026-01-06T00:00:00Z");
    let (at, fr) = (&w.leads["at"], &w.leads["fr"]);
    assert_eq!(
        (at.score, at.fit, at.owner.as_deref()),
        (105, 20, Some("a"))
    );
    assert_eq!((fr.score, fr.fit, fr.owner.as_deref()), (100, 0, Some("b")));
    assert_eq!(at.history.transitions[0].to, Stage::Lead);
    assert_eq!(fr.history.transitions[0].to, Stage::Sql);
    assert_eq!(sent(&w, "at").len(), 1);
    assert!(sent(&w, "fr").is_empty());
}

#[test]
fn numbers_written_as_text_are_read_as_people_write_them() {
    use super::scoring::number_from_text as n;
    for (text, want) in [
        ("1500", json!(1500)),
        ("1,500", json!(1500)),
        (" 2 000 000 ", json!(2_000_000)),
        ("1_000", json!(1000)),
        ("-1,250.5", json!(-1250.5)),
        ("+7", json!(7)),
        ("0.25", json!(0.25)),
    ] {
        assert_eq!(n(text).map(Value::Number), Some(want), "{text:?}");
    }
    // Ambiguous or not a number at all: left as text.
    for text in [
        "",
        "1,5",
        "1,50,000",
        "1.500,00",
        "1,500 000",
        "50-200",
        "$10",
        "1e3",
        ".5",
        "1.",
        "-",
    ] {
        assert_eq!(n(text), None, "{text:?}");
    }
}

/// `settings.numbers` stores a number sent as text as that number; any
/// other text compared with a number is noted with its field and value,
/// once, instead of a condition error.
#[test]
fn numbers_sent_as_text_are_converted_or_noted() {
    let r = rules(
        r#"
settings:
  numbers: [employees]
scoring:
  - { name: big, on: identify, if: 'lead.attributes.employees >= 1000', points: 10 }
  - { name: said-big, on: identify, if: 'event.traits.employees >= 1000', points: 1 }
fit:
  - { name: rich, if: '1000000 <= lead.attributes.revenue', points: 5 }
"#,
    );
    let traits = json!({"traits": {"employees": "1,500", "revenue": "2,000,000"}});
    let w = run(
        &r,
        vec![
            ev("1", "u", "identify", "2026-01-05T10:00:00Z", traits),
            ev("2", "u", "page_viewed", "2026-01-05T11:00:00Z", json!({})),
        ],
        "2026-01-06T00:00:00Z",
    );
    let l = &w.leads["u"];
    assert_eq!(l.attributes["employees"], json!(1500));
    assert_eq!(l.attributes["revenue"], json!("2,000,000"));
    assert_eq!((l.score, l.fit), (10, 0));
    let notes: Vec<&Note> = w
        .effects
        .iter()
        .filter_map(|(_, _, e)| match e {
            Effect::Note(n @ (Note::NotANumber { .. } | Note::ConditionError { .. })) => Some(n),
            _ => None,
        })
        .collect();
    // The event keeps what was sent; the fit rule is noted once, not again
    // on the next event (its inputs did not change).
    assert_eq!(
        notes,
        vec![
            &Note::NotANumber {
                rule: "said-big".into(),
                field: "event.traits.employees".into(),
                value: "1,500".into()
            },
            &Note::NotANumber {
                rule: "rich".into(),
                field: "lead.attributes.revenue".into(),
                value: "2,000,000".into()
            },
        ]
    );
    let stored = serde_json::to_value(notes[1]).unwrap();
    assert_eq!(stored["note"], "not_a_number");
}

/// A `schedule` rule that compares text with a number notes it at every
/// tick, as `simulate` visits every lead: the daemon's ticks must visit the
/// lead too, or its timeline would miss what simulate's shows.
#[test]
fn a_schedule_rule_reading_text_as_a_number_wakes_at_every_tick() {
    let r = rules(
        "scoring:\n  - { name: s, schedule: '0 3 * * *', if: 'now - lead.last_activity_at > duration(\"720h\") && lead.attributes.employees == 1000', points: 1 }\n",
    );
    let eval = Evaluator::new(&r);
    let mut lead = crate::model::LeadState::new("u", t("2026-01-05T10:00:00Z"));
    lead.attributes.insert("employees".into(), json!(1000));
    assert_eq!(
        eval.tick_wake(&lead),
        Wake::From(time::millis(&t("2026-02-04T10:00:00Z")))
    );
    lead.attributes.insert("employees".into(), json!("1,000"));
    assert_eq!(eval.tick_wake(&lead), Wake::Always);
}
