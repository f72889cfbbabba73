//! Re-folding a lead when one of its events arrives late: the lead's
//! history is run again in time order with the late event in its place, so
//! state, score and stage become what `simulate` gives for the same events
//! (SPEC section 3), while what was already carried out is neither repeated
//! nor undone (docs/daemon.md, "Arrival order").
//!
//! Two folds run in memory, each over a world of one lead: *before* (the
//! events applied so far) and *after* (with the late event). What *after*
//! decides beyond *before* is what the late event changed: new webhooks and
//! notes are carried out. Emails are held against those queued, one per
//! step per enrollment (the shell's `sent`): a step *after* sends that was
//! not queued goes out, and a step queued
//! that *after* has not reached yet counts as sent
//! ([`crate::model::Enrollment::sent_ahead`]).
//! Routing is the shared book's and was carried out: a re-fold keeps the
//! lead's owner, offer and SLA clock. A late event that brings an unrouted
//! lead to `sql` leaves it for the shell to route now, with the shared
//! book ([`Refolded::route_at`]); one that would change routing otherwise
//! is refused ([`NotRefolded::Routing`]), and the shell applies it as it
//! arrives instead.

use super::World;
use crate::eval::{Effect, Evaluator, Note, Timer, TimerKind};
use crate::model::time::Timestamp;
use crate::model::{EnrollmentStatus, Event, LeadState};
use crate::rules::config::WebhookEvent;

/// A lead re-folded with a late event.
#[derive(Debug, Clone)]
pub struct Refolded {
    /// The lead as its events in time order make it, with its owner, offer
    /// and SLA clock as they stand. Its history holds the whole re-folded
    /// ledger and transitions (they replace the stored ones), and of the
    /// other parts only what is new: emails and feedback the late event
    /// added, after those already in `current`'s history.
    pub lead: LeadState,
    /// What the late event changed, at the time it happens in the re-folded
    /// history: emails, webhooks and notes to carry out and record.
    pub effects: Vec<(Timestamp, Effect)>,
    /// Drip steps due after the history's end (they replace the stored
    /// ones; SLA timers stay as they are).
    pub timers: Vec<Timer>,
    /// Webhooks carried out that the re-folded history would not have made
    /// (kept, not undone).
    pub kept: usize,
    /// The lead entered `sql` at this time in the re-folded history, where
    /// it had not before: route it now with the shared book
    /// ([`crate::eval::Evaluator::route_now`]); until then it has no owner.
    pub route_at: Option<Timestamp>,
    /// The drip steps the re-folded history sends, as (campaign, cycle,
    /// step): those queued and not among them were kept, not undone.
    pub steps: Vec<(String, u32, usize)>,
}

/// Why a late event could not take its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRefolded {
    /// The stored lead is not what its events give (rules changed since, or
    /// an earlier event came later than the allowed lateness).
    Diverged,
    /// The late event would change the lead's owner, offer or SLA clock,
    /// which were decided with the shared routing book.
    Routing,
    /// Some of the lead's stored events were pruned (retention): its
    /// history cannot be run again whole.
    Pruned,
}

impl NotRefolded {
    pub fn as_str(self) -> &'static str {
        match self {
            NotRefolded::Diverged => "the stored lead is not what its events give (rules changed since, or an earlier event came later than the allowed lateness)",
            NotRefolded::Routing => "it would change the lead's owner, offer or SLA clock, already decided",
            NotRefolded::Pruned => "the lead's older events were pruned (retention), so its history cannot be run again",
        }
    }
}

/// One fold: the lead after `events` in time order (ties in the given
/// order) and the due work up to `until`, on a routing book of its own.
struct Fold {
    lead: Option<LeadState>,
    effects: Vec<(Timestamp, Effect)>,
    timers: Vec<Timer>,
}

fn fold(eval: &Evaluator<'_>, id: &str, events: &[&Event], until: Timestamp) -> Fold {
    let mut world = World::new(*eval);
    world.keep_effects = true;
    let mut sorted: Vec<&Event> = events.to_vec();
    sorted.sort_by_key(|e| e.at);
    for ev in sorted {
        world.apply(ev, Some(until));
    }
    world.run_until(until);
    Fold {
        lead: world.leads.remove(id),
        effects: world
            .effects
            .into_iter()
            .map(|(_, at, e)| (at, e))
            .collect(),
        timers: world.timers.into_values().collect(),
    }
}

/// Re-folds `current` (the lead as stored, and as this step left it;
/// `None` for one not seen before, whose first event came after a tick it
/// happened before) with the `late` event, given the events `applied` to it
/// so far (any order);
/// the history runs up to `until`, where the lead stands now. `sent`
/// tells whether drip step `step` (1-based) of the lead's enrollment in
/// `campaign` in `cycle` is queued already.
pub fn refold(
    eval: &Evaluator<'_>,
    current: Option<&LeadState>,
    applied: &[Event],
    late: &Event,
    until: Timestamp,
    sent: &dyn Fn(&str, u32, usize) -> bool,
) -> Result<Refolded, NotRefolded> {
    let id = late.lead.as_str();
    let mut events: Vec<&Event> = applied.iter().collect();
    let before = fold(eval, id, &events, until);
    events.push(late);
    let after = fold(eval, id, &events, until.max(late.at));
    let Some(mut lead) = after.lead else {
        return Err(NotRefolded::Diverged);
    };
    let fresh = LeadState::new(id, late.at);
    let was = match (before.lead, current) {
        (Some(was), Some(current)) if decisive(&was) == decisive(current) => was,
        (None, None) => fresh.clone(),
        _ => return Err(NotRefolded::Diverged),
    };
    let current = current.unwrap_or(&fresh);
    // Routed only in the re-folded history: routed now, for real.
    let unrouted = |l: &LeadState| l.owner.is_none() && l.offered_to.is_empty();
    let route_at = if routing(&was) == routing(&lead) {
        None
    } else if unrouted(&was)
        && unrouted(current)
        && lead.stage == crate::model::Stage::Sql
        && lead.memory.counts.feedback == was.memory.counts.feedback
    {
        let entered = lead
            .history
            .transitions
            .iter()
            .rev()
            .find(|t| t.to == crate::model::Stage::Sql)
            .map(|t| t.at);
        Some(entered.ok_or(NotRefolded::Routing)?)
    } else {
        return Err(NotRefolded::Routing);
    };
    // Emails by what is queued; the rest by what the late event changed.
    let due = |at: &Timestamp, campaign: &str, step: usize| {
        let cycle = cycle_at(&lead, campaign, at);
        !sent(campaign, cycle, step)
    };
    let mut added: Vec<(Timestamp, Effect)> = after
        .effects
        .iter()
        .filter(|(_, e)| match e {
            Effect::SendEmail {
                campaign,
                cycle,
                step,
                ..
            } => !sent(campaign, *cycle, *step),
            _ => false,
        })
        .cloned()
        .collect();
    let others = |effects: &[(Timestamp, Effect)]| -> Vec<(Timestamp, Effect)> {
        effects
            .iter()
            .filter(|(_, e)| carried_by_refold(e) && !matches!(e, Effect::SendEmail { .. }))
            .cloned()
            .collect()
    };
    let (now, was_effects) = (others(&after.effects), others(&before.effects));
    added.extend(minus(&now, &was_effects));
    added.sort_by_key(|(at, _)| *at);
    let steps = lead
        .history
        .emails
        .iter()
        .map(|e| {
            let cycle = cycle_at(&lead, &e.campaign, &e.at);
            (e.campaign.clone(), cycle, e.step)
        })
        .collect();
    let new_emails: Vec<_> = lead
        .history
        .emails
        .iter()
        .filter(|e| due(&e.at, &e.campaign, e.step))
        .cloned()
        .collect();
    let kept = minus(&was_effects, &now).len();
    // Steps queued that the re-folded history has not reached: sent.
    for en in lead
        .enrollments
        .iter_mut()
        .filter(|en| en.status == EnrollmentStatus::Active)
    {
        let steps = eval
            .rules
            .campaigns
            .iter()
            .find(|c| c.name == en.campaign)
            .map_or(0, |c| c.steps.len());
        for step in en.next_step..steps {
            if sent(&en.campaign, en.cycle, step + 1) && !en.sent_ahead.contains(&step) {
                en.sent_ahead.push(step);
            }
        }
    }
    // Owner, offer and SLA clock as decided with the shared book.
    lead.owner = current.owner.clone();
    lead.routing_rule = current.routing_rule.clone();
    lead.offered_to = current.offered_to.clone();
    lead.offered_at = current.offered_at;
    lead.sla_due = current.sla_due;
    lead.sla_breaches = current.sla_breaches;
    lead.claim_due = current.claim_due;
    lead.seen_to = lead.seen_to.max(current.seen_to);
    // History: the ledger and transitions whole (they replace the stored
    // ones); emails and feedback only those the late event added.
    let new_feedback: Vec<_> = lead
        .history
        .feedback
        .iter()
        .skip(was.history.feedback.len())
        .cloned()
        .map(|mut f| {
            f.owner = current.owner.clone();
            f
        })
        .collect();
    let c = &mut lead.memory.counts;
    c.emails = current.memory.counts.emails + new_emails.len() as u64;
    c.feedback = current.memory.counts.feedback + new_feedback.len() as u64;
    c.assignments = current.memory.counts.assignments;
    let h = &mut lead.history;
    h.emails = current
        .history
        .emails
        .iter()
        .cloned()
        .chain(new_emails)
        .collect();
    h.feedback = current
        .history
        .feedback
        .iter()
        .cloned()
        .chain(new_feedback)
        .collect();
    h.assignments = current.history.assignments.clone();
    lead.cache = Default::default();
    let timers = after
        .timers
        .into_iter()
        .filter(|t| matches!(t.kind, TimerKind::Drip { .. }))
        .collect();
    Ok(Refolded {
        lead,
        effects: added,
        timers,
        kept,
        route_at,
        steps,
    })
}

/// The cycle of `lead`'s enrollment in `campaign` at `at`: the latest
/// enrolled by then. A re-folded email of a cycle since ended is composed
/// for that cycle (its Message-ID names it).
pub fn cycle_at(lead: &LeadState, campaign: &str, at: &Timestamp) -> u32 {
    lead.enrollments
        .iter()
        .filter(|e| e.campaign == campaign && e.enrolled_at <= *at)
        .max_by_key(|e| e.enrolled_at)
        .map_or(lead.cycle, |e| e.cycle)
}

/// What a stored lead and its events must agree on for a re-fold to start
/// from them: everything the evaluator decides with but routing (decided
/// with the shared book) and what only counts emails and feedback.
fn decisive(l: &LeadState) -> impl PartialEq + '_ {
    let enrollments: Vec<_> = l
        .enrollments
        .iter()
        .map(|e| (&e.campaign, e.cycle, e.status))
        .collect();
    (
        (l.score, l.fit, l.stage, l.consent, l.cycle, l.undeliverable),
        (&l.email, &l.attributes),
        (&l.memory.points, &l.memory.hits, l.memory.counts.ledger),
        l.memory.counts.transitions,
        enrollments,
    )
}

/// The lead's place with sales, as the shared book decided it.
fn routing(l: &LeadState) -> impl PartialEq + '_ {
    (
        &l.owner,
        &l.routing_rule,
        &l.offered_to,
        l.sla_due.is_some(),
    )
}

/// Whether a re-fold carries out an effect the late event added: routing's
/// (notices to owners, offers, assignment and SLA webhooks, routing notes)
/// belong to the shared book and are never made again by a re-fold.
fn carried_by_refold(e: &Effect) -> bool {
    match e {
        Effect::SendEmail { .. } => true,
        Effect::Webhook { event, .. } => {
            !matches!(event, WebhookEvent::Assigned | WebhookEvent::SlaBreached)
        }
        Effect::Note(n) => !matches!(
            n,
            Note::Offered { .. }
                | Note::ClaimRefused { .. }
                | Note::SlaBreached { .. }
                | Note::SlaStopped { .. }
                | Note::Unrouted { .. }
                | Note::RuleFull { .. }
                | Note::ClaimExpired { .. }
                | Note::FallbackFull { .. }
        ),
        Effect::NotifyOwner { .. }
        | Effect::OfferToOwners { .. }
        | Effect::NotifySlaBreach { .. }
        | Effect::Schedule(_) => false,
    }
}

/// `a` without `b`'s effects, one for one, comparing effects but not times.
fn minus(a: &[(Timestamp, Effect)], b: &[(Timestamp, Effect)]) -> Vec<(Timestamp, Effect)> {
    let mut rest: Vec<&Effect> = b.iter().map(|(_, e)| e).collect();
    a.iter()
        .filter(|(_, e)| match rest.iter().position(|r| *r == e) {
            Some(k) => {
                rest.swap_remove(k);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ruleset;
    use std::path::Path;

    const RULES: &str = r#"
scoring:
  - { name: view, on: page_view, points: 10 }
stages:
  mql: 'lead.score >= 30'
  sql: 'lead.score >= 50'
routing:
  recycle_score: 0
  owners:
    - { id: ana, email: ana@example.com }
  rules:
    - { name: all, strategy: round_robin, owners: [ana] }
campaigns:
  - name: welcome
    enroll: 'lead.score >= 10'
    exit: 'lead.stage == "sql"'
    steps:
      - { after: 1h, template: hello }
      - { after: 2d, template: again }
templates:
  - { name: hello, subject: hi, text: hi }
  - { name: again, subject: again, text: again }
"#;

    fn ev(id: &str, kind: &str, at: &str, props: serde_json::Value) -> Event {
        let v = serde_json::json!({"id": id, "lead": "u1", "type": kind, "at": at,
            "traits": {"email": "u1@example.com", "consent": "opted_in"}, "properties": props});
        Event::from_json(&v, None).unwrap()
    }

    fn rules() -> Ruleset {
        Ruleset::from_text(Path::new("r.yaml"), RULES).unwrap_or_else(|d| panic!("{d}"))
    }

    /// Applies `events` one by one in the order given, re-folding each that
    /// came before the lead's history's end, as the daemon does.
    fn arrive(eval: &Evaluator<'_>, events: &[Event]) -> (LeadState, usize) {
        let mut applied: Vec<Event> = Vec::new();
        let mut lead: Option<LeadState> = None;
        let mut emails = 0;
        let mut queued: Vec<(String, u32, usize)> = Vec::new();
        for e in events {
            match lead.as_ref().and_then(|l| l.seen_to).filter(|s| e.at < *s) {
                Some(until) => {
                    let cur = lead.clone().unwrap();
                    let sent = |c: &str, cy: u32, s: usize| {
                        queued.iter().any(|q| q.0 == c && q.1 == cy && q.2 == s)
                    };
                    let r = refold(eval, Some(&cur), &applied, e, until, &sent).unwrap();
                    for (_, e) in &r.effects {
                        if let Effect::SendEmail {
                            campaign,
                            cycle,
                            step,
                            ..
                        } = e
                        {
                            emails += 1;
                            queued.push((campaign.clone(), *cycle, *step));
                        }
                    }
                    let mut l = r.lead;
                    if let Some(at) = r.route_at {
                        let mut book = crate::eval::Book::default();
                        l = eval.route_now(l, &mut book, at).lead;
                    }
                    l.history = Default::default();
                    lead = Some(l);
                }
                None => {
                    let mut book = crate::eval::Book::default();
                    let d = eval.on_event(lead.take(), &mut book, e);
                    for e in &d.effects {
                        if let Effect::SendEmail {
                            campaign,
                            cycle,
                            step,
                            ..
                        } = e
                        {
                            emails += 1;
                            queued.push((campaign.clone(), *cycle, *step));
                        }
                    }
                    let mut l = d.lead;
                    l.seen_to = l.seen_to.max(Some(e.at));
                    l.history = Default::default();
                    lead = Some(l);
                }
            }
            applied.push(e.clone());
        }
        (lead.unwrap(), emails)
    }

    #[test]
    fn a_view_before_a_recycle_that_arrives_after_it_scores_as_in_time_order() {
        let rules = rules();
        let eval = Evaluator::new(&rules);
        let none = serde_json::json!({});
        let events = vec![
            ev("v1", "page_view", "2026-01-01T10:00:00Z", none.clone()),
            ev("v2", "page_view", "2026-01-01T10:01:00Z", none.clone()),
            ev("v3", "page_view", "2026-01-01T10:02:00Z", none.clone()),
            ev("v4", "page_view", "2026-01-01T10:03:00Z", none.clone()),
            ev("v5", "page_view", "2026-01-01T10:04:00Z", none.clone()),
            ev(
                "f1",
                "sales_feedback",
                "2026-01-01T10:10:00Z",
                serde_json::json!({"status": "rejected"}),
            ),
            ev("v6", "page_view", "2026-01-01T10:20:00Z", none.clone()),
        ];
        let mut world = World::new(eval);
        world.run(&mut events.clone(), None);
        let want = world.leads["u1"].clone();
        // v3 arrives last: in arrival order it scores after the recycle.
        let mut shuffled = events.clone();
        let v3 = shuffled.remove(2);
        shuffled.push(v3);
        let (got, _) = arrive(&eval, &shuffled);
        assert_eq!(got.score, want.score, "score as in time order");
        assert_eq!(got.stage, want.stage);
        assert_eq!(got.memory.points, want.memory.points);
        assert_eq!(got.cycle, want.cycle);
        // Without the re-fold it would have scored on top of the reset.
        assert_eq!(want.score, 10);
    }

    #[test]
    fn an_email_already_sent_is_neither_repeated_nor_sent_again_when_due() {
        let rules = rules();
        let eval = Evaluator::new(&rules);
        let none = serde_json::json!({});
        // v2 (earlier) arrives after the first step went out at 11:00.
        let v1 = ev("v1", "page_view", "2026-01-01T10:30:00Z", none.clone());
        let v2 = ev("v2", "page_view", "2026-01-01T10:00:00Z", none.clone());
        let mut book = crate::eval::Book::default();
        let d = eval.on_event(None, &mut book, &v1);
        let Some(Effect::Schedule(t)) = d.effects.iter().find(|e| matches!(e, Effect::Schedule(_)))
        else {
            panic!("no drip timer: {:?}", d.effects)
        };
        let t = t.clone();
        let d2 = eval.on_timer(d.lead, &mut book, &t);
        assert!(d2
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SendEmail { step: 1, .. })));
        let mut cur = d2.lead;
        cur.seen_to = Some(t.at);
        let sent = |c: &str, cycle: u32, step: usize| c == "welcome" && cycle == 0 && step == 1;
        let r = refold(
            &eval,
            Some(&cur),
            std::slice::from_ref(&v1),
            &v2,
            t.at,
            &sent,
        )
        .unwrap();
        // In time order the lead enrolled at 10:00 and step 1 went out at
        // 11:00 too: nothing new to send, and step 2 is due 2 days on.
        assert!(
            !r.effects
                .iter()
                .any(|(_, e)| matches!(e, Effect::SendEmail { .. })),
            "{:?}",
            r.effects
        );
        assert_eq!(r.lead.score, 20);
        assert_eq!(r.lead.enrollments[0].next_step, 1);
        assert!(r
            .timers
            .iter()
            .all(|t| matches!(t.kind, TimerKind::Drip { step: 1, .. })));
        assert_eq!(r.lead.memory.counts.emails, 1);
        assert_eq!(r.lead.history.ledger.len(), 2, "the ledger re-folded whole");
    }

    #[test]
    fn a_step_due_in_the_refolded_history_and_never_queued_goes_out() {
        let rules = rules();
        let eval = Evaluator::new(&rules);
        let none = serde_json::json!({});
        // Enrolled at 10:30 (step 1 due 11:30, not run yet); the history
        // ends at 12:00 (a tick ran); a view at 10:00 comes late.
        let v1 = ev("v1", "page_view", "2026-01-01T10:30:00Z", none.clone());
        let v0 = ev("v0", "page_view", "2026-01-01T10:00:00Z", none);
        let mut book = crate::eval::Book::default();
        let mut cur = eval.on_event(None, &mut book, &v1).lead;
        cur.history = Default::default();
        let until = crate::model::time::parse("2026-01-01T12:00:00Z").unwrap();
        let nothing = |_: &str, _: u32, _: usize| false;
        let r = refold(
            &eval,
            Some(&cur),
            std::slice::from_ref(&v1),
            &v0,
            until,
            &nothing,
        )
        .unwrap();
        let sends: Vec<_> = r
            .effects
            .iter()
            .filter(|(_, e)| matches!(e, Effect::SendEmail { step: 1, .. }))
            .collect();
        assert_eq!(sends.len(), 1, "{:?}", r.effects);
        assert_eq!(
            sends[0].0,
            crate::model::time::parse("2026-01-01T11:00:00Z").unwrap()
        );
        assert_eq!(r.lead.memory.counts.emails, 1);
        assert_eq!(r.lead.history.emails.len(), 1);
    }

    #[test]
    fn a_step_counted_as_sent_ahead_is_not_sent_again_when_due() {
        let rules = rules();
        let eval = Evaluator::new(&rules);
        let v1 = ev(
            "v1",
            "page_view",
            "2026-01-01T10:00:00Z",
            serde_json::json!({}),
        );
        let mut book = crate::eval::Book::default();
        let mut l = eval.on_event(None, &mut book, &v1).lead;
        // What a re-fold leaves when the stored lead sent step 1 and the
        // history in time order sends it later.
        let en = &mut l.enrollments[0];
        assert_eq!(en.next_step, 0);
        en.sent_ahead.push(0);
        let timer = Timer {
            lead: "u1".into(),
            at: en.due_at.unwrap(),
            kind: TimerKind::Drip {
                campaign: "welcome".into(),
                cycle: 0,
                step: 0,
            },
        };
        let d = eval.on_timer(l, &mut book, &timer);
        assert!(
            !d.effects
                .iter()
                .any(|e| matches!(e, Effect::SendEmail { .. })),
            "sent ahead: not sent again"
        );
        assert_eq!(d.lead.enrollments[0].next_step, 1);
        assert!(d.lead.enrollments[0].sent_ahead.is_empty());
        // Step 2 is scheduled as if step 1 had gone out now.
        assert!(d.effects.iter().any(|e| matches!(
            e,
            Effect::Schedule(Timer {
                kind: TimerKind::Drip { step: 1, .. },
                ..
            })
        )));
    }

    #[test]
    fn a_late_event_that_brings_the_lead_to_sql_leaves_it_to_be_routed_now() {
        let rules = rules();
        let eval = Evaluator::new(&rules);
        let none = serde_json::json!({});
        let views: Vec<Event> = (0..4)
            .map(|i| {
                ev(
                    &format!("v{i}"),
                    "page_view",
                    &format!("2026-01-01T10:0{i}:00Z"),
                    none.clone(),
                )
            })
            .collect();
        let (cur, _) = arrive(&eval, &views);
        assert_eq!((cur.score, cur.owner.as_deref()), (40, None));
        // A fifth view, earlier than the last: the lead reaches sql at 10:03.
        let late = ev("v9", "page_view", "2026-01-01T10:02:30Z", none);
        let until = cur.seen_to.unwrap();
        let nothing = |_: &str, _: u32, _: usize| false;
        let r = refold(&eval, Some(&cur), &views, &late, until, &nothing).unwrap();
        assert_eq!(r.lead.stage, crate::model::Stage::Sql);
        assert_eq!(
            r.lead.owner, None,
            "routed by the shell, with the shared book"
        );
        assert_eq!(
            r.route_at,
            Some(crate::model::time::parse("2026-01-01T10:03:00Z").unwrap())
        );
        // Routed, a late recycle would change the owner: refused.
        let mut all = views.clone();
        all.push(late);
        let (routed, _) = arrive(&eval, &all);
        assert_eq!(routed.owner.as_deref(), Some("ana"));
        let recycle = ev(
            "f1",
            "sales_feedback",
            "2026-01-01T10:02:45Z",
            serde_json::json!({"status": "rejected"}),
        );
        let until = routed.seen_to.unwrap();
        let err = refold(&eval, Some(&routed), &all, &recycle, until, &nothing).unwrap_err();
        assert_eq!(err, NotRefolded::Routing);
        // A stored lead its events do not give is refused too.
        let mut other = cur.clone();
        other.score += 1;
        let err = refold(&eval, Some(&other), &views, &views[0], until, &nothing).unwrap_err();
        assert_eq!(err, NotRefolded::Diverged);
    }
}
