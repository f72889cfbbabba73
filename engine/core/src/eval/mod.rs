//! The evaluator: a pure function of (rules, lead state, routing book, input)
//! to (new lead state, effects). No clock, no I/O: time comes from the event
//! or the timer, and everything the outside world must do (send an email,
//! fire a webhook, wake up later) comes back as an [`Effect`].
//!
//! The steps follow SPEC section 3; each lives in its own file:
//! `scoring.rs` (rules, plugins, fit), `lifecycle.rs` (stages, feedback),
//! `drip.rs` (campaigns and due steps), `routing.rs` (owners, SLA).

mod agenda;
pub mod answer;
mod drip;
mod effects;
mod lifecycle;
mod routing;
mod scoring;
mod wake;

pub use agenda::{Agenda, Due};
pub use effects::{Effect, Note, PluginEffect, Postponed, Timer, TimerKind, WebhookDetail};
pub use routing::Book;
pub use scoring::{check_effects, BOUNCED};
pub use wake::Wake;

use crate::cel::{self as cond, EvalIssue, Scope};
use crate::model::{time::Timestamp, Event, LeadState};
use crate::rules::{Plugin, Ruleset};

/// Runs scoring plugins. The daemon and `simulate` plug the WASM host in here;
/// a call must be deterministic (fuel, not time, bounds it) for replays to hold.
pub trait PluginHost: Send + Sync {
    fn call(
        &self,
        plugin: &Plugin,
        lead: &LeadState,
        event: &Event,
    ) -> Result<Vec<PluginEffect>, String>;
}

/// One input to the evaluator: an event, a due timer, or a `schedule` tick
/// of rules `rules` at `at`.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Event(&'a Event),
    Timer(&'a Timer),
    Tick { at: Timestamp, rules: &'a [usize] },
}

impl Input<'_> {
    /// When the input happens: the time of every decision it makes.
    pub fn at(&self) -> Timestamp {
        match self {
            Input::Event(e) => e.at,
            Input::Timer(t) => t.at,
            Input::Tick { at, .. } => *at,
        }
    }
}

/// What one input did to one lead.
#[derive(Debug, Clone)]
pub struct Decision {
    pub lead: LeadState,
    pub effects: Vec<Effect>,
}

/// The rules, ready to evaluate inputs.
#[derive(Clone, Copy)]
pub struct Evaluator<'r> {
    pub rules: &'r Ruleset,
    pub plugins: Option<&'r dyn PluginHost>,
    /// Notes that only explain (a limit that stopped a rule): `simulate
    /// --explain` and rule tests ask for them; the daemon does not store
    /// one per stopped rule.
    pub explain: bool,
}

impl<'r> Evaluator<'r> {
    pub fn new(rules: &'r Ruleset) -> Self {
        Evaluator {
            rules,
            plugins: None,
            explain: false,
        }
    }

    pub fn with_plugins(rules: &'r Ruleset, plugins: &'r dyn PluginHost) -> Self {
        Evaluator {
            rules,
            plugins: Some(plugins),
            explain: false,
        }
    }

    /// Applies one event (already known not to be a duplicate). `lead` is
    /// `None` for a lead never seen before.
    pub fn on_event(&self, lead: Option<LeadState>, book: &mut Book, ev: &Event) -> Decision {
        let mut lead = lead.unwrap_or_else(|| LeadState::new(&ev.lead, ev.at));
        if let Some(t) = ev.imported {
            lead.quiet_until = lead.quiet_until.max(Some(t));
        }
        let mut run = Run::new(self, lead, book, ev.at, Some(ev));
        run.merge_traits(ev);
        run.sales_input(ev);
        run.score_event(ev);
        run.call_plugins(ev);
        run.settle();
        run.finish()
    }

    /// Runs a due timer. Timers that no longer apply (the step was sent or the
    /// lead left, the owner changed) do nothing, so shells never need to
    /// cancel one.
    pub fn on_timer(&self, lead: LeadState, book: &mut Book, timer: &Timer) -> Decision {
        let mut run = Run::new(self, lead, book, timer.at, None);
        match &timer.kind {
            TimerKind::Drip {
                campaign,
                cycle,
                step,
            } => run.due_step(campaign, *cycle, *step),
            TimerKind::Sla { owner } => run.sla_due(owner),
            TimerKind::Claim { rule } => run.claim_expired(rule),
        }
        run.finish()
    }

    /// Runs the `schedule` rules `rules` (indexes into `Ruleset::scoring`)
    /// that fire at `at` for one lead, then the steps that follow scoring.
    pub fn on_schedule(
        &self,
        lead: LeadState,
        book: &mut Book,
        at: Timestamp,
        rules: &[usize],
    ) -> Decision {
        let mut run = Run::new(self, lead, book, at, None);
        let before = run.lead.memory.counts.ledger;
        for &i in rules {
            run.apply_rule(i, None);
        }
        // Nothing changed and no later condition reads the clock: the rest of
        // the pipeline would decide exactly what it decided last time.
        if run.lead.memory.counts.ledger != before || self.rules.settle_reads_now {
            run.settle();
        }
        run.finish()
    }

    /// Routes a lead that is in `sql` without an owner or an offer, as
    /// entering `sql` at `at` would have: a late event re-folded into its
    /// history brought it there (crate::sim::refold), and routing is the
    /// shared book's, decided now.
    pub fn route_now(&self, lead: LeadState, book: &mut Book, at: Timestamp) -> Decision {
        let mut run = Run::new(self, lead, book, at, None);
        run.route(None);
        run.finish()
    }

    /// Applies one input to `lead` (`None`: not stored yet). An event makes
    /// the lead it names; a timer or tick of a lead that does not exist
    /// decides nothing (`None`).
    pub fn apply(
        &self,
        lead: Option<LeadState>,
        book: &mut Book,
        input: Input<'_>,
    ) -> Option<Decision> {
        let at = input.at();
        let mut d = match input {
            Input::Event(ev) => self.on_event(lead, book, ev),
            Input::Timer(t) => {
                let d = self.on_timer(lead?, book, t);
                if d.effects.is_empty() {
                    // Stale (sent, moved or left since): decided nothing.
                    return Some(d);
                }
                d
            }
            Input::Tick { at, rules } => {
                let l = lead?;
                let scored = l.memory.counts.ledger;
                let d = self.on_schedule(l, book, at, rules);
                if d.lead.memory.counts.ledger == scored {
                    // A tick that scored nothing leaves the lead as it was
                    // (it is not written again).
                    return Some(d);
                }
                d
            }
        };
        // How far the lead's history goes: an event before this came late.
        if d.lead.seen_to.is_none_or(|s| s < at) {
            d.lead.seen_to = Some(at);
        }
        Some(d)
    }

    /// The next instant after `after` at which `schedule` rules fire, and which.
    pub fn next_schedule(&self, after: Timestamp) -> Option<(Timestamp, Vec<usize>)> {
        let mut best: Option<(Timestamp, Vec<usize>)> = None;
        for &i in &self.rules.scheduled {
            let crate::rules::Trigger::Schedule(s) = &self.rules.scoring[i].trigger else {
                continue;
            };
            let Some(t) = crate::rules::cron5::next_after(s, &after) else {
                continue;
            };
            match &mut best {
                Some((bt, list)) if *bt == t => list.push(i),
                Some((bt, _)) if *bt < t => {}
                _ => best = Some((t, vec![i])),
            }
        }
        best
    }
}

/// The working state of one evaluation.
pub(crate) struct Run<'e, 'r> {
    ev: &'e Evaluator<'r>,
    rules: &'r Ruleset,
    ctx: cel::Context<'static, 'static>,
    scope: Scope<'e>,
    lead: LeadState,
    book: &'e mut Book,
    now: Timestamp,
    /// The id of the event being applied, if any.
    current_event: Option<String>,
    effects: Vec<Effect>,
}

impl<'e, 'r> Run<'e, 'r> {
    fn new(
        ev: &'e Evaluator<'r>,
        lead: LeadState,
        book: &'e mut Book,
        now: Timestamp,
        event: Option<&'e Event>,
    ) -> Self {
        let mut lead = lead;
        let rules = ev.rules;
        lead.memory
            .fit_to(|name| rules.limit_times(name), rules.cap_max());
        Run {
            ev,
            rules: ev.rules,
            ctx: ev.rules.cel_context(),
            scope: Scope::new(now, event),
            lead,
            book,
            now,
            current_event: event.map(|e| e.id.clone()),
            effects: Vec::new(),
        }
    }

    /// Evaluates a condition; failures are false, and errors other than a
    /// missing key are noted on the lead's timeline.
    fn holds(&mut self, cond: &cond::Condition) -> bool {
        if let Some(b) = self
            .lead
            .cache
            .get(self.rules.fingerprint, cond.slot, cond.deps.lead)
        {
            return b;
        }
        let b = match self.scope.eval(cond, &self.ctx, &self.lead) {
            Ok(true) => true,
            failed => {
                // Text where a number is compared: a false (or a type error)
                // the marketer can fix, named by its field and value.
                if let Some((field, value)) = cond.number_as_text(&self.lead, self.scope.event()) {
                    self.not_a_number(&cond.label, field, value);
                } else if let Err(EvalIssue::Error(message)) = failed {
                    self.note(Note::ConditionError {
                        rule: cond.label.to_string(),
                        message,
                    });
                }
                false
            }
        };
        self.lead.cache.put(self.rules.fingerprint, cond.slot, b);
        b
    }

    /// Records which lead fields changed (bits of [`cond::fields`]), so that
    /// cached condition results depending on them are evaluated again.
    fn touched(&mut self, fields: u16) {
        self.lead.cache.touched(fields);
    }

    pub(super) fn note(&mut self, n: Note) {
        self.effects.push(Effect::Note(n));
    }

    /// Notes text compared as a number, once per rule and field in a decision.
    fn not_a_number(&mut self, rule: &str, field: String, value: String) {
        let seen = self.effects.iter().any(|e| {
            matches!(e, Effect::Note(Note::NotANumber { rule: r, field: f, .. }) if r == rule && *f == field)
        });
        if !seen {
            let value = value.chars().take(100).collect();
            self.note(Note::NotANumber {
                rule: rule.to_string(),
                field,
                value,
            });
        }
    }

    fn schedule(&mut self, at: Timestamp, kind: TimerKind) {
        self.effects.push(Effect::Schedule(Timer {
            lead: self.lead.id.clone(),
            at,
            kind,
        }));
    }

    fn webhook(&mut self, event: crate::rules::config::WebhookEvent, detail: WebhookDetail) {
        let names: Vec<String> = self
            .rules
            .webhooks_for(event)
            .map(|w| w.name.clone())
            .collect();
        for webhook in names {
            self.effects.push(Effect::Webhook {
                webhook,
                event,
                detail: detail.clone(),
            });
        }
    }

    /// Steps 5–7 of SPEC section 3: fit, stage, campaigns, routing.
    fn settle(&mut self) {
        self.recompute_fit();
        let entered = self.evaluate_stage();
        self.campaigns();
        if entered == Some(crate::model::Stage::Sql) {
            self.route(None);
        }
    }

    fn finish(self) -> Decision {
        Decision {
            lead: self.lead,
            effects: self.effects,
        }
    }
}

#[cfg(test)]
mod authoring_tests;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
