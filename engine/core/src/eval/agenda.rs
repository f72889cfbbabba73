//! The agenda: what runs next, written once for `simulate` ([`crate::sim::World`])
//! and the daemon's processor. The order is the product's promise (SPEC
//! section 3): work due at or before an event's time runs before the event;
//! at equal times, timers run before `schedule` ticks; a tick the daemon had
//! to split over several steps goes on before anything else.
//!
//! The agenda holds no work itself, only the schedule's position: callers
//! keep their events and timers (in memory, or in the database) and tell it
//! when the next of each is due.

use super::Evaluator;
use crate::model::time::Timestamp;

/// What runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The next event.
    Event,
    /// The earliest timer.
    Timer,
    /// `schedule` rules `rules` fire at `at`, over every lead in id order.
    Tick { at: Timestamp, rules: Vec<usize> },
}

/// The schedule's position, and the order of work.
#[derive(Debug, Clone, Default)]
pub struct Agenda {
    /// `schedule` rules have fired up to here; the first event applied
    /// starts the schedule.
    ticked_to: Option<Timestamp>,
    /// A tick was begun and not finished: it goes on first.
    resuming: bool,
    /// The next tick after `ticked_to`, once computed (cron iteration is slow).
    next_tick: Option<Option<(Timestamp, Vec<usize>)>>,
}

impl Agenda {
    /// An agenda where `schedule` rules have fired up to `ticked_to`;
    /// `resuming`: the tick after it was begun and is not finished.
    pub fn new(ticked_to: Option<Timestamp>, resuming: bool) -> Self {
        Agenda {
            ticked_to,
            resuming,
            next_tick: None,
        }
    }

    /// Where the schedule stands.
    pub fn ticked_to(&self) -> Option<Timestamp> {
        self.ticked_to
    }

    /// Whether a tick is begun and not finished.
    pub fn resuming(&self) -> bool {
        self.resuming
    }

    /// What runs next, given when the next event happened (`None`: no event
    /// waits) and when the earliest timer is due; nothing later than
    /// `horizon` but the event itself runs. `None`: nothing to do.
    pub fn next(
        &mut self,
        eval: &Evaluator<'_>,
        event: Option<Timestamp>,
        timer: Option<Timestamp>,
        horizon: Timestamp,
    ) -> Option<Due> {
        if self.resuming {
            match self.tick(eval) {
                Some((at, rules)) => return Some(Due::Tick { at, rules }),
                // The rules changed and schedule nothing more.
                None => self.resuming = false,
            }
        }
        let limit = event.map_or(horizon, |a| a.min(horizon));
        let timer = timer.filter(|a| *a <= limit);
        let tick = self.tick(eval).filter(|(a, _)| *a <= limit);
        match (timer, tick) {
            (Some(t), Some((k, _))) if t <= k => Some(Due::Timer),
            (Some(_), None) => Some(Due::Timer),
            (_, Some((at, rules))) => Some(Due::Tick { at, rules }),
            (None, None) => event.map(|_| Due::Event),
        }
    }

    /// An event at `at` is applied: the schedule starts from the first.
    pub fn event_applied(&mut self, at: Timestamp) {
        if self.ticked_to.is_none() {
            self.ticked_to = Some(at);
            self.next_tick = None;
        }
    }

    /// The tick at `at` ran over every lead.
    pub fn ticked(&mut self, at: Timestamp) {
        self.ticked_to = Some(at);
        self.resuming = false;
        self.next_tick = None;
    }

    /// The tick just begun stops part way; it goes on first next time.
    pub fn suspend(&mut self) {
        self.resuming = true;
    }

    fn tick(&mut self, eval: &Evaluator<'_>) -> Option<(Timestamp, Vec<usize>)> {
        if self.next_tick.is_none() {
            self.next_tick = Some(self.ticked_to.and_then(|from| eval.next_schedule(from)));
        }
        self.next_tick.clone().flatten()
    }
}
