//! An in-memory world that drives the evaluator in time order: events, due
//! timers and `schedule` rule ticks. `nurture simulate` and `nurture test`
//! run on it; nothing is sent, the effects are only recorded.

mod events;
mod output;

pub use events::{read_events_file, read_events_str};
pub use output::lead_line;

use crate::eval::{Book, Effect, Evaluator, Timer};
use crate::model::{time::Timestamp, Event, LeadState};
use std::collections::{BTreeMap, HashSet};

pub struct World<'r> {
    eval: Evaluator<'r>,
    pub leads: BTreeMap<String, LeadState>,
    pub book: Book,
    seen: HashSet<String>,
    /// Due work by (time, arrival): equal times run in the order scheduled.
    timers: BTreeMap<(Timestamp, u64), Timer>,
    seq: u64,
    /// `schedule` rules have fired up to here.
    ticked_to: Option<Timestamp>,
    /// Every effect but timers, per lead, when `keep_effects` is on.
    pub effects: Vec<(String, Timestamp, Effect)>,
    pub keep_effects: bool,
}

impl<'r> World<'r> {
    pub fn new(eval: Evaluator<'r>) -> Self {
        World {
            eval,
            leads: BTreeMap::new(),
            book: Book::default(),
            seen: HashSet::new(),
            timers: BTreeMap::new(),
            seq: 0,
            ticked_to: None,
            effects: Vec::new(),
            keep_effects: false,
        }
    }

    /// Applies an event after the work due by its time (up to `until`).
    /// Returns false for a duplicate id.
    pub fn apply(&mut self, ev: &Event, until: Option<Timestamp>) -> bool {
        let due_to = until.map_or(ev.at, |u| u.min(ev.at));
        self.run_until(due_to);
        if !self.seen.insert(ev.id.clone()) {
            return false;
        }
        if self.ticked_to.is_none() {
            self.ticked_to = Some(ev.at);
        }
        let lead = self.leads.remove(&ev.lead);
        let d = self.eval.on_event(lead, &mut self.book, ev);
        self.absorb(d.lead, ev.at, d.effects);
        true
    }

    /// Runs timers and `schedule` ticks due at or before `t`, in time order;
    /// at equal times timers run first.
    pub fn run_until(&mut self, t: Timestamp) {
        loop {
            let timer_at = self.timers.keys().next().map(|k| k.0).filter(|a| *a <= t);
            let tick = self
                .ticked_to
                .and_then(|from| self.eval.next_schedule(from))
                .filter(|(a, _)| *a <= t);
            match (timer_at, tick) {
                (Some(a), Some((b, _))) if a <= b => self.run_timer(),
                (Some(_), None) => self.run_timer(),
                (_, Some((b, rules))) => self.run_tick(b, &rules),
                (None, None) => return,
            }
        }
    }

    fn run_timer(&mut self) {
        let Some((_, timer)) = self.timers.pop_first() else { return };
        let Some(lead) = self.leads.remove(&timer.lead) else { return };
        let d = self.eval.on_timer(lead, &mut self.book, &timer);
        self.absorb(d.lead, timer.at, d.effects);
    }

    fn run_tick(&mut self, at: Timestamp, rules: &[usize]) {
        self.ticked_to = Some(at);
        let ids: Vec<String> = self.leads.keys().cloned().collect();
        for id in ids {
            let Some(lead) = self.leads.remove(&id) else { continue };
            let d = self.eval.on_schedule(lead, &mut self.book, at, rules);
            self.absorb(d.lead, at, d.effects);
        }
    }

    fn absorb(&mut self, lead: LeadState, at: Timestamp, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Schedule(t) => {
                    self.seq += 1;
                    self.timers.insert((t.at, self.seq), t);
                }
                other if self.keep_effects => self.effects.push((lead.id.clone(), at, other)),
                _ => {}
            }
        }
        self.leads.insert(lead.id.clone(), lead);
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
