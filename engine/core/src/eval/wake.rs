//! When a `schedule` tick can next change a lead: the shell stores it with
//! the lead (`leads.tick_at`) so a tick over a million leads visits only
//! those it can change (docs/daemon.md, Scheduled work).
//!
//! Exact by construction: a lead is skipped only while every `schedule`
//! rule's condition is false whatever the tick's time before the wake
//! (cel::wake), and no condition after scoring reads `now`; such a tick
//! scores nothing and changes nothing (Evaluator::apply), so the visits
//! left out are ones that decide nothing.

use super::Evaluator;
use crate::cel::wake::{Anchor, Shape};
use crate::cel::{EvalIssue, Scope};
use crate::model::time::from_millis;
use crate::model::LeadState;

/// From when a tick may change a lead, as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// Any tick may.
    Always,
    /// Ticks at or after this instant (ms since the epoch) may.
    From(i64),
    /// None can, until the lead changes.
    Never,
}

impl Wake {
    /// Whether a tick at `at_ms` may change the lead.
    pub fn due(self, at_ms: i64) -> bool {
        match self {
            Wake::Always => true,
            Wake::From(t) => t <= at_ms,
            Wake::Never => false,
        }
    }

    /// The stored form: `NULL` for never, the lowest value for always.
    pub fn column(self) -> Option<i64> {
        match self {
            Wake::Always => Some(i64::MIN),
            Wake::From(t) => Some(t),
            Wake::Never => None,
        }
    }
}

impl Evaluator<'_> {
    /// From when a `schedule` tick may change `lead`.
    pub fn tick_wake(&self, lead: &LeadState) -> Wake {
        let rules = self.rules;
        if rules.scheduled.is_empty() {
            return Wake::Never;
        }
        // A tick settles the lead when a later condition reads the clock.
        if rules.settle_reads_now {
            return Wake::Always;
        }
        let ctx = rules.cel_context();
        let mut wake = Wake::Never;
        for &i in &rules.scheduled {
            let Some(cond) = &rules.scoring[i].condition else {
                return Wake::Always;
            };
            // Text where the condition compares a number is noted at every
            // tick that evaluates it (Run::holds), before its bounds too:
            // every tick visits, as every tick of `simulate` does.
            if cond.number_as_text(lead, None).is_some() {
                return Wake::Always;
            }
            let Shape::Bounded(bounds) = cond.shape.as_ref() else {
                return Wake::Always;
            };
            // The latest point the condition's bounds name, floored to ms.
            let mut from: Option<i64> = None;
            for b in bounds {
                let ns = b.terms.iter().fold(b.offset_ns, |sum, (anchor, k)| {
                    let t = match anchor {
                        Anchor::CreatedAt => &lead.created_at,
                        Anchor::LastActivityAt => &lead.last_activity_at,
                    };
                    sum + k * i128::from(t.timestamp_nanos_opt().unwrap_or(i64::MIN))
                });
                let Ok(ms) = i64::try_from(ns.div_euclid(1_000_000)) else {
                    return Wake::Always;
                };
                from = Some(from.map_or(ms, |f| f.max(ms)));
            }
            // Past every bound, the condition is its other parts, which do
            // not read `now`: evaluate it just after the latest one.
            let probe = match from {
                Some(ms) => match ms.checked_add(1) {
                    Some(p) if from_millis(p).timestamp_millis() == p => from_millis(p),
                    _ => return Wake::Always,
                },
                None => lead.last_activity_at,
            };
            let holds = Scope::new(probe, None).eval(cond, &ctx, lead);
            let rule = match holds {
                Ok(true) => from.map_or(Wake::Always, Wake::From),
                Ok(false) | Err(EvalIssue::Missing) => Wake::Never,
                // An error is noted on the lead at each tick: keep visiting.
                Err(EvalIssue::Error(_)) => Wake::Always,
            };
            wake = wake.min(rule);
            if wake == Wake::Always {
                break;
            }
        }
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::rules;
    use super::*;
    use crate::model::time::millis;
    use crate::model::Event;
    use crate::rules::Ruleset;
    use crate::sim::World;

    fn ms(s: &str) -> i64 {
        millis(&crate::model::time::parse(s).unwrap())
    }

    const DECAY: &str = r#"
scoring:
  - name: view
    on: page_view
    points: 10
  - name: decay
    schedule: "0 3 * * *"
    if: 'now - lead.last_activity_at > duration("72h") && lead.score > 0'
    points: -5
stages:
  lead: 'lead.email != ""'
"#;

    fn lead(r: &Ruleset, events: &[(&str, &str)]) -> LeadState {
        let mut w = World::new(Evaluator::new(r));
        let mut evs: Vec<Event> = events
            .iter()
            .enumerate()
            .map(|(i, (kind, at))| {
                Event::from_json(
                    &serde_json::json!({"id": format!("e{i}"), "lead": "l", "type": kind, "at": at}),
                    None,
                )
                .unwrap()
            })
            .collect();
        let until = evs.last().map(|e| e.at);
        w.run(&mut evs, until);
        w.leads["l"].clone()
    }

    #[test]
    fn a_decay_wakes_when_the_lead_has_been_quiet_long_enough() {
        let r = rules(DECAY);
        let eval = Evaluator::new(&r);
        let l = lead(&r, &[("page_view", "2026-01-01T10:00:00Z")]);
        assert_eq!(eval.tick_wake(&l), Wake::From(ms("2026-01-04T10:00:00Z")));
        // Nothing to lose: no tick can change it.
        let zero = lead(&r, &[("signup", "2026-01-01T10:00:00Z")]);
        assert_eq!(zero.score, 0);
        assert_eq!(eval.tick_wake(&zero), Wake::Never);
    }

    #[test]
    fn ticks_before_the_wake_change_nothing_and_the_first_after_it_may() {
        // Checked against the evaluator itself: every tick a day apart.
        let r = rules(DECAY);
        let eval = Evaluator::new(&r);
        let mut l = lead(
            &r,
            &[
                ("page_view", "2026-01-01T10:00:00Z"),
                ("page_view", "2026-01-02T09:00:00Z"),
            ],
        );
        let mut book = super::super::Book::default();
        let mut at = crate::model::time::parse("2026-01-03T03:00:00Z").unwrap();
        let mut changed = 0;
        for _ in 0..10 {
            let wake = eval.tick_wake(&l);
            let d = eval
                .apply(
                    Some(l.clone()),
                    &mut book,
                    super::super::Input::Tick {
                        at,
                        rules: &r.scheduled,
                    },
                )
                .unwrap();
            let scored = d.lead.memory.counts.ledger != l.memory.counts.ledger;
            assert!(
                wake.due(millis(&at)) || !scored,
                "skipped a tick that scores at {at}"
            );
            changed += usize::from(scored);
            l = d.lead;
            at += chrono::Duration::days(1);
        }
        // 20 points lost 5 a night from the fourth night on.
        assert_eq!(changed, 4);
        assert_eq!(eval.tick_wake(&l), Wake::Never);
    }

    #[test]
    fn unbounded_conditions_and_clock_reading_stages_visit_every_tick() {
        let r = rules(&DECAY.replace(
            "now - lead.last_activity_at > duration(\"72h\")",
            "now.getDayOfWeek() == 1",
        ));
        let l = lead(&r, &[("page_view", "2026-01-01T10:00:00Z")]);
        assert_eq!(Evaluator::new(&r).tick_wake(&l), Wake::Always);
        let r = rules(&format!(
            "{DECAY}  mql: 'now - lead.created_at > duration(\"1h\")'\n"
        ));
        assert_eq!(Evaluator::new(&r).tick_wake(&l), Wake::Always);
        let none = rules("scoring:\n  - name: v\n    on: page_view\n    points: 1\n");
        assert_eq!(Evaluator::new(&none).tick_wake(&l), Wake::Never);
    }

    #[test]
    fn the_stored_form_orders_as_the_wake() {
        assert_eq!(Wake::Always.column(), Some(i64::MIN));
        assert_eq!(Wake::From(5).column(), Some(5));
        assert_eq!(Wake::Never.column(), None);
        assert!(Wake::From(5).due(5) && !Wake::From(5).due(4) && !Wake::Never.due(i64::MAX));
    }
}
