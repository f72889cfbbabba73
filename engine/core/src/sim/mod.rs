//! An in-memory world that drives the evaluator in time order: events, due
//! timers and `schedule` rule ticks. `nurture simulate` and `nurture test`
//! run on it; nothing is sent, the effects are only recorded.

pub mod compare;
mod events;
pub mod explain;
pub mod gen;
mod refold;

pub use crate::view::{lead_detail, lead_line};
pub use events::{read_events_file, read_events_str};
pub use refold::{cycle_at, refold, NotRefolded, Refolded};

use crate::eval::{Agenda, Book, Decision, Due, Effect, Evaluator, Input, Timer};
use crate::model::{time::Timestamp, Event, LeadState};
use explain::Mark;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::BTreeMap;

pub struct World<'r> {
    eval: Evaluator<'r>,
    /// Leads by id; [`World::in_order`] lists them by id.
    pub leads: HashMap<String, LeadState>,
    pub book: Book,
    seen: HashSet<String>,
    /// Due work by (time, arrival): equal times run in the order scheduled.
    timers: BTreeMap<(Timestamp, u64), Timer>,
    seq: u64,
    /// What runs next (the same agenda as the daemon's processor).
    agenda: Agenda,
    /// Every effect but timers, per lead, when `keep_effects` is on.
    pub effects: Vec<(String, Timestamp, Effect)>,
    pub keep_effects: bool,
    /// Each lead's timeline, when explaining ([`World::explain`]).
    pub stories: Option<explain::Stories>,
}

impl<'r> World<'r> {
    pub fn new(eval: Evaluator<'r>) -> Self {
        World {
            eval,
            leads: HashMap::new(),
            book: Book::default(),
            seen: HashSet::new(),
            timers: BTreeMap::new(),
            seq: 0,
            agenda: Agenda::default(),
            effects: Vec::new(),
            keep_effects: false,
            stories: None,
        }
    }

    /// Keeps each lead's timeline from now on, as the daemon would show
    /// it, with its emails rendered.
    pub fn explain(&mut self) {
        self.stories = Some(explain::Stories::new(self.eval.rules));
    }

    /// Applies an event after the work due by its time (up to `until`).
    /// Returns false for a duplicate id.
    pub fn apply(&mut self, ev: &Event, until: Option<Timestamp>) -> bool {
        let due_to = until.map_or(ev.at, |u| u.min(ev.at));
        self.run_until(due_to);
        if !self.seen.insert(ev.id.clone()) {
            return false;
        }
        self.agenda.event_applied(ev.at);
        let input = Input::Event(ev);
        if !self.update(&ev.lead, input) {
            if let Some(d) = self.eval.apply(None, &mut self.book, input) {
                let lead = self.decided(Some(ev), Mark::default(), d, ev.at);
                self.leads.insert(lead.id.clone(), lead);
            }
        }
        true
    }

    /// Runs timers and `schedule` ticks due at or before `t`, in time order;
    /// at equal times timers run first.
    pub fn run_until(&mut self, t: Timestamp) {
        loop {
            let timer = self.timers.keys().next().map(|k| k.0);
            match self.agenda.next(&self.eval, None, timer, t) {
                Some(Due::Timer) => self.run_timer(),
                Some(Due::Tick { at, rules }) => self.run_tick(at, &rules),
                Some(Due::Event) | None => return,
            }
        }
    }

    fn run_timer(&mut self) {
        let Some((_, timer)) = self.timers.pop_first() else {
            return;
        };
        self.update(&timer.lead, Input::Timer(&timer));
    }

    fn run_tick(&mut self, at: Timestamp, rules: &[usize]) {
        self.agenda.ticked(at);
        // The leads the tick can change (eval/wake.rs: the others it would
        // leave as they are, as the daemon skips them), in id order: the
        // routing book makes order matter.
        let at_ms = at.timestamp_millis();
        let eval = &self.eval;
        let mut ids: Vec<String> = self
            .leads
            .iter()
            .filter(|(_, lead)| eval.tick_wake(lead).due(at_ms))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.update(&id, Input::Tick { at, rules });
        }
    }

    /// Applies `input` to the known lead `id` and keeps what it decided.
    /// The lead is moved out and back rather than removed from the map and
    /// inserted again (the evaluator takes and returns it by value).
    /// Returns false, doing nothing, for an unknown lead.
    fn update(&mut self, id: &str, input: Input<'_>) -> bool {
        let Some(slot) = self.leads.get_mut(id) else {
            return false;
        };
        let at = input.at();
        let lead = std::mem::replace(slot, LeadState::new("", at));
        let before = Mark::of(Some(&lead));
        let Some(d) = self.eval.apply(Some(lead), &mut self.book, input) else {
            return false;
        };
        let event = match input {
            Input::Event(ev) => Some(ev),
            _ => None,
        };
        let lead = self.decided(event, before, d, at);
        if let Some(slot) = self.leads.get_mut(id) {
            *slot = lead;
        }
        true
    }

    /// Keeps what a decision made at `at` leaves (its story, when
    /// explaining; its timers and effects) and returns its lead.
    fn decided(
        &mut self,
        event: Option<&Event>,
        before: Mark,
        d: Decision,
        at: Timestamp,
    ) -> LeadState {
        if let Some(stories) = &mut self.stories {
            stories.record(self.eval.rules, event, before, &d, at);
        }
        let Decision { lead, effects } = d;
        self.absorb(&lead.id.clone(), at, effects);
        lead
    }

    /// The leads ordered by id, as outputs list them.
    pub fn in_order(&self) -> Vec<&LeadState> {
        let mut v: Vec<&LeadState> = self.leads.values().collect();
        v.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn absorb(&mut self, id: &str, at: Timestamp, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Schedule(t) => {
                    self.seq += 1;
                    self.timers.insert((t.at, self.seq), t);
                }
                other if self.keep_effects => self.effects.push((id.to_string(), at, other)),
                _ => {}
            }
        }
    }

    /// Runs `events` in time order (ties in the given order), then due work
    /// up to `until` (default: the last event's time).
    pub fn run(&mut self, events: &mut [Event], until: Option<Timestamp>) {
        events.sort_by_key(|e| e.at);
        let until = until.or_else(|| events.last().map(|e| e.at));
        for ev in events.iter() {
            self.apply(ev, until);
        }
        if let Some(u) = until {
            self.run_until(u);
        }
    }
}
