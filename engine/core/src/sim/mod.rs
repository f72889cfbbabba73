//! An in-memory world that drives the evaluator in time order: events, due
//! timers and `schedule` rule ticks. `nurture simulate` and `nurture test`
//! run on it; nothing is sent, the effects are only recorded.

mod events;
pub mod gen;
mod output;

pub use events::{read_events_file, read_events_str};
pub use output::{lead_detail, lead_line};

use crate::eval::{Book, Decision, Effect, Evaluator, Timer};
use crate::model::{time::Timestamp, Event, LeadState};
use std::collections::{BTreeMap, HashMap, HashSet};

pub struct World<'r> {
    eval: Evaluator<'r>,
    /// Leads by id; [`World::in_order`] lists them by id.
    pub leads: HashMap<String, LeadState>,
    pub book: Book,
    seen: HashSet<String>,
    /// Due work by (time, arrival): equal times run in the order scheduled.
    timers: BTreeMap<(Timestamp, u64), Timer>,
    seq: u64,
    /// `schedule` rules have fired up to here.
    ticked_to: Option<Timestamp>,
    /// The next tick after `ticked_to`, once computed (cron iteration is slow).
    next_tick: Option<Option<(Timestamp, Vec<usize>)>>,
    /// Every effect but timers, per lead, when `keep_effects` is on.
    pub effects: Vec<(String, Timestamp, Effect)>,
    pub keep_effects: bool,
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
            ticked_to: None,
            next_tick: None,
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
            self.next_tick = None;
        }
        if !self.update(&ev.lead, ev.at, |eval, lead, book| {
            eval.on_event(Some(lead), book, ev)
        }) {
            let Decision { lead, effects } = self.eval.on_event(None, &mut self.book, ev);
            self.leads.insert(lead.id.clone(), lead);
            self.absorb(&ev.lead, ev.at, effects);
        }
        true
    }

    /// Runs timers and `schedule` ticks due at or before `t`, in time order;
    /// at equal times timers run first.
    pub fn run_until(&mut self, t: Timestamp) {
        loop {
            let timer_at = self.timers.keys().next().map(|k| k.0).filter(|a| *a <= t);
            if self.next_tick.is_none() {
                self.next_tick = Some(
                    self.ticked_to
                        .and_then(|from| self.eval.next_schedule(from)),
                );
            }
            let tick = self.next_tick.clone().flatten().filter(|(a, _)| *a <= t);
            match (timer_at, tick) {
                (Some(a), Some((b, _))) if a <= b => self.run_timer(),
                (Some(_), None) => self.run_timer(),
                (_, Some((b, rules))) => self.run_tick(b, &rules),
                (None, None) => return,
            }
        }
    }

    fn run_timer(&mut self) {
        let Some((_, timer)) = self.timers.pop_first() else {
            return;
        };
        self.update(&timer.lead, timer.at, |eval, lead, book| {
            eval.on_timer(lead, book, &timer)
        });
    }

    fn run_tick(&mut self, at: Timestamp, rules: &[usize]) {
        self.ticked_to = Some(at);
        self.next_tick = None;
        // Every lead, in id order: the routing book makes order matter.
        let mut ids: Vec<String> = self.leads.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            self.update(&id, at, |eval, lead, book| {
                eval.on_schedule(lead, book, at, rules)
            });
        }
    }

    /// Runs one evaluation for the known lead `id` and keeps what it decided.
    /// The lead is moved out and back rather than removed from the map and
    /// inserted again (the evaluator takes and returns it by value).
    /// Returns false, doing nothing, for an unknown lead.
    fn update(
        &mut self,
        id: &str,
        at: Timestamp,
        f: impl FnOnce(Evaluator<'r>, LeadState, &mut Book) -> Decision,
    ) -> bool {
        let Some(slot) = self.leads.get_mut(id) else {
            return false;
        };
        let lead = std::mem::replace(slot, LeadState::new("", at));
        let Decision { lead, effects } = f(self.eval, lead, &mut self.book);
        *slot = lead;
        self.absorb(id, at, effects);
        true
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
