//! Routing that ends (issue 17 point 3): the SLA stops after
//! `max_reassign` breaches, a full rule passes the lead on, an unclaimed
//! offer expires (`claim_within`), and `check` catches what would not work.

use super::tests::{ev, rules, t};
use super::*;
use crate::model::time;
use crate::rules::Ruleset;
use crate::sim::World;
use serde_json::json;
use std::path::Path;

fn hot(lead: &str, at: &str) -> Event {
    ev(&format!("hot-{lead}"), lead, "hot", at, json!({}))
}

fn claim(id: &str, lead: &str, owner: &str, at: &str) -> Event {
    ev(
        id,
        lead,
        "sales_claim",
        at,
        json!({"properties": {"owner": owner}}),
    )
}

fn run<'r>(r: &'r Ruleset, events: Vec<Event>, until: &str) -> World<'r> {
    super::tests::run(r, events, Some(until))
}

/// A `hot` event makes an SQL; `ROUTING` is the `routing:` section's body.
fn with_routing(routing: &str) -> Ruleset {
    rules(&format!(
        "scoring:\n  - {{ name: hot, on: hot, points: 100 }}\nstages:\n  sql: 'lead.score >= 100'\nrouting:\n{routing}"
    ))
}

/// Each assignment of `lead`: (owner, rule, when).
fn assignments(w: &World<'_>, lead: &str) -> Vec<(String, String, String)> {
    w.leads[lead]
        .history
        .assignments
        .iter()
        .map(|a| (a.owner.clone(), a.rule.clone(), time::format(&a.at)))
        .collect()
}

fn count(w: &World<'_>, f: impl Fn(&Effect) -> bool) -> usize {
    w.effects.iter().filter(|(_, _, e)| f(e)).count()
}

fn notes(w: &World<'_>, lead: &str) -> Vec<Note> {
    w.effects
        .iter()
        .filter_map(|(l, _, e)| match e {
            Effect::Note(n) if l == lead => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn a(owner: &str, rule: &str, at: &str) -> (String, String, String) {
    (owner.into(), rule.into(), at.into())
}

/// The marketer's lead that got 329 "new lead" emails: two owners, nobody
/// answers. Over 60 days it is reassigned twice, then goes to the fallback
/// owner without a clock, and the sales lead hears of three breaches.
#[test]
fn a_lead_nobody_answers_is_reassigned_max_reassign_times_then_goes_to_the_fallback() {
    let r = with_routing(
        "  owners:
    - { id: a, email: a@x.io }
    - { id: b, email: b@x.io }
    - { id: m, email: m@x.io }
  rules:
    - { name: r, owners: [a, b], strategy: round_robin }
  sla: { accept_within: 1d, notify: boss@x.io, on_breach: reassign, max_reassign: 2, fallback: m }
",
    );
    let w = run(
        &r,
        vec![hot("u", "2026-01-01T00:00:00Z")],
        "2026-03-02T00:00:00Z",
    );
    assert_eq!(
        assignments(&w, "u"),
        vec![
            a("a", "r", "2026-01-01T00:00:00Z"),
            a("b", "r", "2026-01-02T00:00:00Z"),
            a("a", "r", "2026-01-03T00:00:00Z"),
            a("m", "r", "2026-01-04T00:00:00Z"),
        ]
    );
    assert_eq!(count(&w, |e| matches!(e, Effect::NotifyOwner { .. })), 4);
    assert_eq!(
        count(
            &w,
            |e| matches!(e, Effect::NotifySlaBreach { to, .. } if to == "boss@x.io")
        ),
        3
    );
    let stopped: Vec<Note> = notes(&w, "u")
        .into_iter()
        .filter(|n| matches!(n, Note::SlaStopped { .. }))
        .collect();
    assert_eq!(
        stopped,
        vec![Note::SlaStopped {
            owner: "a".into(),
            breaches: 3,
            to: Some("m".into())
        }]
    );
    let l = &w.leads["u"];
    assert_eq!(l.owner.as_deref(), Some("m"));
    assert_eq!((l.sla_due, l.sla_breaches), (None, 3));
    // Only the fallback holds it: capacity freed by the others.
    let open: Vec<u32> = ["a", "b", "m"].map(|o| w.book.open_count(o)).to_vec();
    assert_eq!(open, vec![0, 0, 1]);
}

/// Without a fallback the lead stays with its owner and the clock stops:
/// with the default (2) after three breaches, with 0 after the first; the
/// same bound holds for `on_breach: notify`'s reminders.
#[test]
fn without_a_fallback_the_lead_stays_with_its_owner_and_breaches_stop() {
    for (sla, breaches, owner) in [
        (
            "{ accept_within: 1d, notify: boss@x.io, on_breach: reassign }",
            3,
            "a",
        ),
        (
            "{ accept_within: 1d, notify: boss@x.io, on_breach: reassign, max_reassign: 0 }",
            1,
            "a",
        ),
        ("{ accept_within: 1d, notify: boss@x.io }", 3, "a"),
    ] {
        let r = with_routing(&format!(
            "  owners:
    - {{ id: a, email: a@x.io }}
    - {{ id: b, email: b@x.io }}
  rules:
    - {{ name: r, owners: [a, b], strategy: round_robin }}
  sla: {sla}
"
        ));
        let w = run(
            &r,
            vec![hot("u", "2026-01-01T00:00:00Z")],
            "2026-03-02T00:00:00Z",
        );
        let breached = count(&w, |e| matches!(e, Effect::Note(Note::SlaBreached { .. })));
        assert_eq!(breached, breaches, "{sla}");
        assert_eq!(
            count(&w, |e| matches!(e, Effect::NotifySlaBreach { .. })),
            breaches,
            "{sla}"
        );
        let l = &w.leads["u"];
        assert_eq!(l.owner.as_deref(), Some(owner), "{sla}");
        assert_eq!(l.sla_due, None, "{sla}");
        assert!(
            notes(&w, "u").contains(&Note::SlaStopped {
                owner: owner.into(),
                breaches: breaches as u32,
                to: None
            }),
            "{sla}"
        );
    }
}

/// Feedback after a fallback, and a recycle, start the count afresh: the
/// next routing gets its own `max_reassign` breaches.
#[test]
fn a_recycled_lead_is_routed_with_a_fresh_count() {
    let r = with_routing(
        "  owners:
    - { id: a, email: a@x.io }
    - { id: b, email: b@x.io }
  rules:
    - { name: r, owners: [a, b], strategy: round_robin }
  sla: { accept_within: 1d, on_breach: reassign, max_reassign: 1 }
",
    );
    let events = vec![
        hot("u", "2026-01-01T00:00:00Z"),
        // a → b at 01-02, stopped at 01-03 (b keeps it).
        ev(
            "f",
            "u",
            "sales_feedback",
            "2026-01-10T00:00:00Z",
            json!({"properties": {"status": "rejected"}}),
        ),
        ev("hot2", "u", "hot", "2026-01-11T00:00:00Z", json!({})),
    ];
    let w = run(&r, events, "2026-02-01T00:00:00Z");
    let owners: Vec<String> = assignments(&w, "u")
        .into_iter()
        .map(|(o, _, _)| o)
        .collect();
    assert_eq!(owners, vec!["a", "b", "a", "b"]);
    assert_eq!(
        count(&w, |e| matches!(e, Effect::Note(Note::SlaStopped { .. }))),
        2
    );
}

/// Every owner of the first matching rule is at capacity: the next rule
/// whose `if` holds takes the lead, and the pass is noted. When no rule
/// can, the lead stays unrouted and the note names the full rules.
#[test]
fn a_rule_whose_owners_are_all_at_capacity_passes_the_lead_to_the_next_rule() {
    let owners = "  owners:
    - { id: a, email: a@x.io, capacity: 1 }
    - { id: b, email: b@x.io, capacity: 1 }
    - { id: c, email: c@x.io }
";
    let r = with_routing(&format!(
        "{owners}  rules:
    - {{ name: first, if: 'lead.score >= 100', owners: [a, b], strategy: round_robin }}
    - {{ name: never, if: 'lead.score < 0', owners: [c], strategy: round_robin }}
    - {{ name: rest, owners: [c], strategy: least_loaded }}
"
    ));
    let events = vec![
        hot("l1", "2026-01-01T00:00:00Z"),
        hot("l2", "2026-01-01T00:01:00Z"),
        hot("l3", "2026-01-01T00:02:00Z"),
    ];
    let w = run(&r, events, "2026-01-01T01:00:00Z");
    assert_eq!(
        assignments(&w, "l1"),
        vec![a("a", "first", "2026-01-01T00:00:00Z")]
    );
    assert_eq!(
        assignments(&w, "l2"),
        vec![a("b", "first", "2026-01-01T00:01:00Z")]
    );
    assert_eq!(
        assignments(&w, "l3"),
        vec![a("c", "rest", "2026-01-01T00:02:00Z")]
    );
    assert_eq!(w.leads["l3"].routing_rule.as_deref(), Some("rest"));
    assert!(notes(&w, "l3").contains(&Note::RuleFull {
        rule: "first".into()
    }));
    assert!(!notes(&w, "l3")
        .iter()
        .any(|n| matches!(n, Note::Unrouted { .. })));

    // A full claim rule is passed over too; with nothing after it, the lead
    // stays unrouted and the note says why.
    let r = with_routing(&format!(
        "{owners}  rules:
    - {{ name: first, owners: [a], strategy: round_robin }}
    - {{ name: pool, owners: [a, b], strategy: claim }}
"
    ));
    let events = vec![
        hot("l1", "2026-01-01T00:00:00Z"),
        hot("l2", "2026-01-01T00:01:00Z"),
        claim("c", "l2", "b", "2026-01-01T00:02:00Z"),
        hot("l3", "2026-01-01T00:03:00Z"),
    ];
    let w = run(&r, events, "2026-01-01T01:00:00Z");
    assert_eq!(w.leads["l2"].owner.as_deref(), Some("b"));
    let l3 = &w.leads["l3"];
    assert_eq!((l3.owner.as_deref(), l3.offered_to.len()), (None, 0));
    assert_eq!(l3.routing_rule, None);
    assert_eq!(
        notes(&w, "l3")
            .into_iter()
            .filter(|n| matches!(n, Note::RuleFull { .. } | Note::Unrouted { .. }))
            .collect::<Vec<_>>(),
        vec![
            Note::RuleFull {
                rule: "first".into()
            },
            Note::RuleFull {
                rule: "pool".into()
            },
            Note::Unrouted {
                reason: "every owner of the matching routing rules is at capacity: `first`, `pool`"
                    .into()
            },
        ]
    );
}

const POOL: &str = "  owners:
    - { id: a, email: a@x.io }
    - { id: b, email: b@x.io }
    - { id: m, email: m@x.io }
    - { id: c, email: c@x.io }
  rules:
    - { name: pool, if: 'lead.score >= 100', owners: [a, b], strategy: claim, claim_within: 48h FALLBACK }
    - { name: rest, owners: [c], strategy: round_robin }
";

/// Nobody claims within `claim_within`: the rule's fallback owner gets the
/// lead (with a notice and an SLA like any assignment), and a claim after
/// the deadline is refused as too late. A lead claimed in time is not moved.
#[test]
fn an_offer_nobody_claims_within_claim_within_goes_to_the_fallback() {
    let r = with_routing(&POOL.replace("FALLBACK", ", fallback: m"));
    let events = vec![
        hot("u1", "2026-01-01T00:00:00Z"),
        hot("u2", "2026-01-01T00:00:00Z"),
        claim("c2", "u2", "b", "2026-01-02T23:59:59Z"),
        claim("c1", "u1", "a", "2026-01-03T00:00:00Z"),
    ];
    let w = run(&r, events, "2026-01-10T00:00:00Z");
    assert_eq!(
        assignments(&w, "u1"),
        vec![a("m", "pool", "2026-01-03T00:00:00Z")]
    );
    let u1 = &w.leads["u1"];
    assert!(u1.offered_to.is_empty());
    assert_eq!(u1.claim_due, Some(t("2026-01-03T00:00:00Z")));
    let n = notes(&w, "u1");
    assert!(n.contains(&Note::ClaimExpired {
        rule: "pool".into(),
        to: Some("m".into())
    }));
    assert!(n.contains(&Note::ClaimRefused {
        owner: "a".into(),
        reason: "too late: the offer closed at 2026-01-03T00:00:00Z (claim_within)".into()
    }));
    assert_eq!(
        assignments(&w, "u2"),
        vec![a("b", "pool", "2026-01-02T23:59:59Z")]
    );
    assert!(!notes(&w, "u2")
        .iter()
        .any(|n| matches!(n, Note::ClaimExpired { .. })));
    assert_eq!(w.book.open_count("m"), 1);
}

/// Without a fallback (or with one at capacity) the expired offer falls
/// through to the next rule whose `if` holds.
#[test]
fn an_expired_offer_without_a_fallback_falls_through_to_the_next_rule() {
    let r = with_routing(&POOL.replace("FALLBACK", ""));
    let w = run(
        &r,
        vec![hot("u", "2026-01-01T00:00:00Z")],
        "2026-01-10T00:00:00Z",
    );
    assert_eq!(
        assignments(&w, "u"),
        vec![a("c", "rest", "2026-01-03T00:00:00Z")]
    );
    assert!(notes(&w, "u").contains(&Note::ClaimExpired {
        rule: "pool".into(),
        to: None
    }));

    let full = POOL
        .replace("FALLBACK", ", fallback: m")
        .replace("id: m, email: m@x.io", "id: m, email: m@x.io, capacity: 0");
    let r = with_routing(&full);
    let w = run(
        &r,
        vec![hot("u", "2026-01-01T00:00:00Z")],
        "2026-01-10T00:00:00Z",
    );
    assert_eq!(w.leads["u"].owner.as_deref(), Some("c"));
    assert!(notes(&w, "u").contains(&Note::FallbackFull { owner: "m".into() }));
}

/// `nurture check`: each mistake at its place, all in one pass.
#[test]
fn check_reports_bad_fallbacks_and_misplaced_or_bad_claim_within() {
    let text = "routing:
  owners:
    - { id: anna, email: a@x.io }
  rules:
    - { name: r, owners: [anna], strategy: round_robin, claim_within: 2h }
    - { name: p, owners: [anna], strategy: claim, claim_within: 2h, fallback: anne }
    - { name: q, owners: [anna], strategy: claim, fallback: anna }
    - { name: s, owners: [anna], strategy: claim, claim_within: 2 days }
    - { name: z, owners: [anna], strategy: claim, claim_within: 0s }
  sla: { accept_within: 1d, fallback: bob, max_reassign: -1 }
";
    let Err(d) = Ruleset::from_text(Path::new("r.yaml"), text) else {
        panic!("no errors");
    };
    let got: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        got,
        vec![
            "r.yaml:5:71: routing rule `r`: claim_within is only for `strategy: claim` (an offer that nobody claimed)",
            "r.yaml:6:79: routing rule `p`: fallback: unknown owner `anne` (did you mean `anna`?)",
            "r.yaml:7:61: routing rule `q`: fallback needs claim_within (it is who gets a lead nobody claimed in time)",
            "r.yaml:8:65: routing.rules[3].claim_within: invalid duration \"2 days\": write an integer and a unit (s, m, h, d, w or ms), e.g. \"3d\"",
            "r.yaml:9:65: routing rule `z`: claim_within must be longer than 0s",
            "r.yaml:10:39: routing.sla: fallback: unknown owner `bob`",
            "r.yaml:10:58: routing.sla.max_reassign: expected a whole number, 0 or more, e.g. 3, found the number -1",
        ],
        "{d}"
    );
    // Editors learn the keys from `nurture schema`, derived from the format.
    let schema = crate::rules::config::schema().to_string();
    for key in ["claim_within", "fallback", "max_reassign"] {
        assert!(schema.contains(&format!("\"{key}\"")), "{key}");
    }
}

/// The example rules use the new keys and stay valid.
#[test]
fn the_example_routing_rules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/routing.yaml");
    let text = std::fs::read_to_string(&dir).unwrap();
    let r = Ruleset::from_text(&dir, &text).unwrap_or_else(|d| panic!("{d}"));
    let sla = r.sla.as_ref().unwrap();
    assert_eq!(sla.max_reassign, 2);
}

/// States stored before these fields read back with no breaches counted and
/// no deadline, and the fields are stored only when set.
#[test]
fn states_stored_before_the_routing_bounds_still_read() {
    let mut lead = LeadState::new("u", t("2026-01-01T00:00:00Z"));
    let old = serde_json::to_value(&lead).unwrap();
    assert!(old.get("sla_breaches").is_none() && old.get("claim_due").is_none());
    let back = crate::rows::parse_state(&old.to_string()).unwrap();
    assert_eq!((back.sla_breaches, back.claim_due), (0, None));
    lead.sla_breaches = 3;
    lead.claim_due = Some(t("2026-01-03T00:00:00Z"));
    let text = serde_json::to_string(&lead).unwrap();
    let back = crate::rows::parse_state(&text).unwrap();
    assert_eq!(back.sla_breaches, 3);
    assert_eq!(back.claim_due, lead.claim_due);
}
