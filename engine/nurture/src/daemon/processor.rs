//! Applies accepted events and due work through the evaluator, a batch of
//! one partition per step, in the same order `simulate` uses: work due at or
//! before an event's time runs before it, timers before `schedule` ticks.
//! Partitions are independent but for the routing book (store/step.rs), so
//! steps of different partitions run side by side (daemon/worker.rs).
//!
//! A step reads and evaluates without holding the write lock (a plugin may
//! take its whole timeout), then writes what it decided in one transaction
//! that commits only if nothing it read changed meanwhile; if something did
//! (another process, an erasure, a release), the step is done again
//! (store/step.rs). So ingest never waits for plugins.
//!
//! A lead whose part of a step cannot be applied is set aside (quarantine):
//! its stored state does not read back, the database refuses a write of its
//! data (found by halving the step until one item is left), or evaluating it
//! panics. Its events and due work wait untouched, the cause goes on its
//! timeline and into the metrics, and every other lead goes on. Failures of
//! the database itself (down, full, read-only) are not a lead's: the step
//! fails whole and is retried (docs/daemon.md, Failures).

use super::metrics::{Metrics, OwnerLabels, RuleErrorLabels};
use super::rules::{Active, RulesHandle};
use crate::clock::Clock;
use crate::eval::{Agenda, Book, Due, Evaluator, Input, PluginEffect, PluginHost, Timer};
use crate::model::{
    bounds,
    time::{millis, Timestamp},
    Event, LeadState,
};
use crate::rules::Plugin;
use crate::store::{
    lead_rows, EngineState, PendingEvent, StepTx, Store, StoreError, TickWakes, Writes,
};
use nurture_core::sim::{refold, NotRefolded, Refolded};
use nurture_core::writes::{
    collect as collect_decision, Collected, Entry, OutboxKind, TimelineKind,
};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use tracing::Instrument as _;

/// Most events applied in one step. With SQLite's one writer, a step's
/// write holds off ingest for its length: 100 keeps that short (batch ingest
/// 10,000 → 28,000–33,000 events/s acknowledged against 500,
/// docs/benchmarks.md) and processing throughput did not measurably fall.
pub const BATCH: i64 = 100;

/// Most events a step grows to while a backlog waits: each full step doubles
/// the next one's size up to this, and a step that finds less resets it to
/// [`BATCH`], so latency stays low when traffic is light while a backlog is
/// worked off in fewer, larger transactions.
pub const MAX_BATCH: i64 = 1_600;

/// Most stored leads one step runs a `schedule` tick over; a longer tick goes
/// on in the following steps, before anything else (docs/daemon.md).
pub const TICK_CHUNK: i64 = 1_000;

pub struct Processor {
    pub store: Store,
    pub rules: RulesHandle,
    pub metrics: Arc<Metrics>,
    /// When a step's decision counts as committed (processing latency).
    pub clock: Clock,
    /// Most events a step grows to under a backlog (the worker's loop).
    pub max_batch: i64,
    /// How far (ms) behind an item's time another partition's next item
    /// may be for the item to read or change the routing book anyway
    /// (`--routing-window`; 0: strictly in time order; `None`: it never
    /// waits).
    pub routing_window_ms: Option<i64>,
    /// How late (ms) an event may come, before the latest thing its lead
    /// has seen, and still take its place: the lead is re-folded
    /// (`--allowed-lateness`, sim::refold).
    pub allowed_lateness_ms: i64,
}

/// A lead as loaded and as it is now, within one step.
struct Slot {
    before: Option<LeadState>,
    now: Option<LeadState>,
    /// Its stored tick wake was computed under other rules (or none):
    /// written again even if the lead does not change (eval::Wake).
    stale_wake: bool,
}

/// What one attempt at a step has loaded and decided so far.
struct StepState {
    /// The partition.
    part: i64,
    /// The engine's shared state as read (book, schedule, version).
    book: Book,
    /// The book as read, to tell whether the step changed it, and whether
    /// a decision read it (the step then checks it is unchanged).
    book_read: Book,
    book_used: bool,
    book_version: i64,
    agenda: Agenda,
    tick_after: Option<String>,
    version: i64,
    leads: HashMap<String, Slot>,
    /// Due timers by (time, arrival order); the seq of stored ones.
    timers: BTreeMap<(Timestamp, u64), (Option<i64>, Timer)>,
    order: u64,
    /// What the decisions leave to store.
    out: Collected,
    /// Events applied (or skipped as unreadable), stored timers that ran.
    processed: Vec<i64>,
    timers_done: Vec<i64>,
    /// Leads set aside, with the cause: their items are skipped, and the
    /// step's write puts them in quarantine.
    aside: BTreeMap<String, String>,
    /// Leads of the items applied (a refused write was about one of them).
    touched: BTreeSet<String>,
    counts: Counts,
    /// When each other partition's earliest work is due (`None`: none),
    /// read when an item first changed the routing book (they only move
    /// on, so an old reading is safe).
    others: Option<Vec<(i64, Option<Timestamp>)>>,
    /// Whether the step ended before an item that waits for other partitions.
    waited: bool,
    /// Indexes (in the step's events) of the events applied so far: a late
    /// event's lead is re-folded with those of its own among them.
    applied_idx: Vec<usize>,
    /// Leads re-folded in this step (their history is written whole).
    refolded: BTreeSet<String>,
    /// The rules' Ruleset::wake_key: a lead loaded with another is stale.
    wake_key: i64,
}

/// Metrics of an attempt, counted once it commits (an attempt done again
/// would count twice).
#[derive(Default)]
struct Counts {
    events: u64,
    not_composed: u64,
    withheld: u64,
    /// Events re-folded in, and applied late as they arrived.
    refolded: u64,
    late: u64,
    /// Leads ticks evaluated.
    tick_leads: u64,
    /// When each applied event was received.
    received: Vec<Timestamp>,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stepped {
    /// Items applied (0: nothing to do).
    pub applied: usize,
    /// It ended before an item that waits until other partitions have
    /// applied their earlier work (routing in time order): step it again
    /// soon.
    pub waited: bool,
}

/// How one attempt at a step ended, short of a database failure.
enum Attempt {
    /// Committed, or nothing to do (0): how many items it applied.
    Done(Stepped),
    /// Something the step read changed before it could write: nothing was
    /// written; do it again.
    Moved,
    /// Evaluating an item of `lead` panicked: do it again without the lead.
    Panicked { lead: String, cause: String },
    /// The database refused the write for the data in it. `leads`: the
    /// leads of the items applied.
    Refused {
        error: StoreError,
        leads: BTreeSet<String>,
    },
}

/// How driving the agenda ended.
enum Drove {
    /// Items applied (ticks and unreadable events included).
    Applied(usize),
    Panicked {
        lead: String,
        cause: String,
    },
    /// An item changed the routing book while another partition had earlier
    /// work: it was undone, and the step ends before it.
    Blocked,
}

/// How applying one item went (Processor::apply_in_order).
enum Applied {
    Done,
    /// It read or changed the routing book too early: undone, it waits.
    Waits,
    /// Evaluating it panicked (the message).
    Panicked(String),
}

/// How re-folding a lead for a late event went (Processor::refold).
enum Refold {
    /// The lead was re-folded with the event in its place.
    Done,
    /// It could not be: the lead as it was, and why; the event is applied
    /// as it arrives.
    Refused(Option<LeadState>, NotRefolded),
    /// Re-folding panicked (the message).
    Panicked(String),
    /// It brings the lead to `sql`, and routing it now would read the book
    /// ahead of another partition's earlier work: the lead as it was; the
    /// event waits for a later step.
    Waits(Option<LeadState>),
}

/// Where `lead`'s history ends, if an event at `at` came before that end:
/// the time of the latest input that decided something for it, or of a
/// `schedule` tick its partition ran after `at`; and how much earlier (ms).
fn late_by(
    eval: &Evaluator<'_>,
    st: &StepState,
    lead: Option<&LeadState>,
    at: Timestamp,
) -> Option<(Timestamp, i64)> {
    // A lead not seen before has no history but its partition's ticks.
    let mut end = lead.and_then(|l| l.seen_to);
    // A tick ran after the event happened (found only for an event older
    // than the partition's schedule: the cron walk is slow).
    if let Some(ticked) = st.agenda.ticked_to().filter(|t| *t > at) {
        if eval.next_schedule(at).is_some_and(|(t, _)| t <= ticked) {
            end = end.max(Some(ticked));
        }
    }
    let end = end.filter(|e| *e > at)?;
    let by = crate::store::millis(&end) - crate::store::millis(&at);
    // Stored times keep milliseconds: a fraction of one is not late.
    (by > 0).then_some((end, by))
}

/// What the step had decided before an item, to undo the item: it changed
/// the routing book too early (see [`Processor::book_may_change`]).
struct Mark {
    book: Book,
    lead: Option<LeadState>,
    timeline: usize,
    outbox: usize,
    order: u64,
    rule_errors: u64,
    sla_breaches: u64,
    not_composed: u64,
    withheld: u64,
}

impl Mark {
    /// Marks where the step stands before `lead`'s next item.
    fn of(st: &StepState, lead: &Option<LeadState>) -> Mark {
        Mark {
            book: st.book.clone(),
            lead: lead.clone(),
            timeline: st.out.timeline.len(),
            outbox: st.out.outbox.len(),
            order: st.order,
            rule_errors: st.out.rule_errors,
            sla_breaches: st.out.sla_breaches,
            not_composed: st.out.not_composed,
            withheld: st.out.withheld,
        }
    }

    /// Undoes what `id`'s item decided after the mark.
    fn undo(self, st: &mut StepState, id: &str) {
        st.book = self.book;
        st.book.consulted = false;
        st.out.timeline.truncate(self.timeline);
        st.out.outbox.truncate(self.outbox);
        st.timers.retain(|k, _| k.1 <= self.order);
        st.order = self.order;
        st.out.rule_errors = self.rule_errors;
        st.out.sla_breaches = self.sla_breaches;
        st.out.not_composed = self.not_composed;
        st.out.withheld = self.withheld;
        if let Some(slot) = st.leads.get_mut(id) {
            slot.now = self.lead;
        }
    }
}

impl Processor {
    /// One step in partition `part`: applies what is pending and due at
    /// `now`, at most `batch` items (the worker grows it with the backlog),
    /// commits, and returns how many items it applied (0: nothing to do).
    /// Leads found poisonous on the way are put in quarantine by the same
    /// commit.
    pub async fn step_up_to(
        &self,
        part: i64,
        now: Timestamp,
        batch: i64,
    ) -> Result<Stepped, StoreError> {
        // What the step works on, filled in once loaded (`attempt`): every
        // line logged during the step names its events and leads.
        let span = tracing::info_span!(
            "step",
            part,
            events = tracing::field::Empty,
            first_seq = tracing::field::Empty,
            last_seq = tracing::field::Empty,
            ids = tracing::field::Empty,
            timers = tracing::field::Empty,
            leads = tracing::field::Empty,
        );
        self.step_in(part, now, batch).instrument(span).await
    }

    async fn step_in(&self, part: i64, now: Timestamp, batch: i64) -> Result<Stepped, StoreError> {
        let mut budget = batch.max(1);
        let mut aside = BTreeMap::new();
        loop {
            match self.attempt(part, now, budget, &aside).await? {
                Attempt::Done(n) => return Ok(n),
                Attempt::Moved => {
                    self.metrics.steps_redone.inc();
                }
                Attempt::Panicked { lead, cause } => {
                    aside.insert(lead, cause);
                }
                Attempt::Refused { error, leads } => {
                    if let StoreError::Unstorable(u) = &error {
                        // Caught before the write, naming its lead.
                        aside.insert(u.lead.clone(), u.detail.clone());
                    } else if budget > 1 {
                        // One of the items' data: halve the step until the
                        // item is alone (the items before it go in).
                        budget /= 2;
                        tracing::debug!(budget, error = %error, "write refused; trying a smaller step");
                    } else if let Some(lead) = leads.first().filter(|_| leads.len() == 1) {
                        aside.insert(
                            lead.clone(),
                            format!("the database refused its data: {}", error.cause()),
                        );
                    } else {
                        // Not a lead's data after all: fail, and be retried.
                        return Err(error);
                    }
                }
            }
        }
    }

    /// One try at a step of at most `budget` items, with the leads in
    /// `aside` set aside: load, drive the agenda, collect, write.
    async fn attempt(
        &self,
        part: i64,
        now: Timestamp,
        budget: i64,
        aside: &BTreeMap<String, String>,
    ) -> Result<Attempt, StoreError> {
        let active = self.rules.current();
        let counted = active.plugins.as_ref().map(|host| Counted {
            host,
            in_flight: &self.metrics.plugin_calls_in_flight,
        });
        let eval = Evaluator {
            rules: &active.rules,
            plugins: counted.as_ref().map(|c| c as &dyn PluginHost),
            explain: false,
        };
        let (mut st, events, horizon) = self
            .load(part, now, budget, aside, active.rules.wake_key)
            .await?;
        name_in_span(&events, &st);
        let applied = match self
            .drive(&eval, &active, &mut st, &events, now, horizon, budget)
            .await?
        {
            Drove::Applied(n) => n,
            Drove::Panicked { lead, cause } => return Ok(panicked(&lead, cause)),
            // drive() ends the step at a blocked item itself.
            Drove::Blocked => 0,
        };
        let waited = st.waited;
        if waited {
            self.metrics.steps_waited.inc();
        }
        if applied == 0 && st.aside.is_empty() {
            // Nothing to do (or only what waits): nothing to write.
            return Ok(Attempt::Done(Stepped { applied: 0, waited }));
        }
        let set_aside = st.aside.len();
        let (w, state, book_changed, counts, aside, touched) = collect(st, &eval);
        let written = self.write(&w, &state, book_changed, now).await?;
        match written {
            Ok(true) => {}
            Ok(false) => return Ok(Attempt::Moved),
            Err(error) => {
                return Ok(Attempt::Refused {
                    error,
                    leads: touched,
                })
            }
        }
        self.committed(counts, &w);
        tracing::debug!(applied, set_aside, "step committed");
        if !aside.is_empty() {
            for (lead, cause) in &aside {
                tracing::warn!(%lead, %cause, "lead set aside (quarantine); its events wait");
            }
            if let Ok(n) = self.store.quarantine_count().await {
                self.metrics.leads_quarantined.set(n);
            }
        }
        Ok(Attempt::Done(Stepped {
            applied: applied + set_aside,
            waited,
        }))
    }

    /// Reads what a step works on: the engine's state, pending events, due
    /// timers, and the leads they name. Returns the step's state, the
    /// events, and the horizon past which due work waits.
    async fn load(
        &self,
        part: i64,
        now: Timestamp,
        budget: i64,
        aside: &BTreeMap<String, String>,
        wake_key: i64,
    ) -> Result<(StepState, Vec<PendingEvent>, Timestamp), StoreError> {
        let EngineState {
            part,
            book,
            book_version,
            ticked_to,
            tick_after,
            version,
        } = self.store.engine_state(part).await?;
        let mut events = self.store.pending_events(part, budget).await?;
        // Applied in the order they happened (ties in arrival order), so
        // events that arrive out of order within one batch need no re-fold.
        events.sort_by_key(|p| p.event.as_ref().ok().map(|e| e.at));
        // With more events waiting than this batch holds, due work later than
        // the batch's last event waits for a later step, so order holds.
        let horizon = if events.len() as i64 == budget {
            events
                .iter()
                .rev()
                .find_map(|e| e.event.as_ref().ok().map(|e| e.at))
                .unwrap_or(now)
                .min(now)
        } else {
            now
        };
        // An import under way: due work waits for the history still to
        // come (store/imports.rs).
        let horizon = match self.store.import_frontier(now).await? {
            Some(frontier) => horizon.min(frontier),
            None => horizon,
        };
        let mut st = StepState {
            part,
            book_read: book.clone(),
            book_used: false,
            book,
            book_version,
            agenda: Agenda::new(ticked_to, tick_after.is_some()),
            tick_after,
            version,
            leads: HashMap::new(),
            timers: BTreeMap::new(),
            order: 0,
            out: Collected::default(),
            processed: Vec::new(),
            timers_done: Vec::new(),
            aside: aside.clone(),
            touched: BTreeSet::new(),
            counts: Counts::default(),
            others: None,
            waited: false,
            applied_idx: Vec::new(),
            refolded: BTreeSet::new(),
            wake_key,
        };
        for due in self.store.due_timers(part, horizon, budget).await? {
            match due.timer {
                Ok(t) => {
                    st.order += 1;
                    st.timers.insert((t.at, st.order), (Some(due.seq), t));
                }
                Err(cause) => {
                    st.aside.entry(due.lead).or_insert(cause);
                }
            }
        }
        // The leads this batch touches, in one query.
        let mut wanted: Vec<String> = events
            .iter()
            .filter_map(|p| p.event.as_ref().ok().map(|e| e.lead.clone()))
            .collect();
        wanted.extend(st.timers.values().map(|(_, t)| t.lead.clone()));
        wanted.sort_unstable();
        wanted.dedup();
        self.load_leads(&mut st, &wanted).await?;
        Ok((st, events, horizon))
    }

    /// Runs the agenda over the loaded work: at most `budget` items, in the
    /// order `simulate` runs them (eval::Agenda).
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        eval: &Evaluator<'_>,
        active: &Active,
        st: &mut StepState,
        events: &[PendingEvent],
        now: Timestamp,
        horizon: Timestamp,
        budget: i64,
    ) -> Result<Drove, StoreError> {
        let mut applied = 0usize;
        let mut unreadable = 0usize;
        let mut next_event = 0usize;
        while applied < budget as usize {
            // Skip events that can no longer be read (erased before applied).
            while let Some(p) = events.get(next_event) {
                if p.event.is_ok() {
                    break;
                }
                st.processed.push(p.seq);
                unreadable += 1;
                next_event += 1;
            }
            let event_at = events
                .get(next_event)
                .and_then(|p| p.event.as_ref().ok())
                .map(|e| e.at);
            let timer_at = st.timers.keys().next().map(|k| k.0);
            let Some(due) = st.agenda.next(eval, event_at, timer_at, horizon) else {
                break;
            };
            match due {
                Due::Event => {
                    let idx = next_event;
                    let p = &events[next_event];
                    next_event += 1;
                    let Ok(ev) = &p.event else { continue };
                    let Some(lead) = self.take(st, &ev.lead).await? else {
                        // Set aside: the event waits, not applied.
                        continue;
                    };
                    let late = late_by(eval, st, lead.as_ref(), ev.at);
                    // Outer `None`: re-folded, the event applied in its place.
                    let (lead, late) = match (lead, late) {
                        // Imported history takes its place however late:
                        // its ticks and timers may have run between batches.
                        (cur, Some((until, by)))
                            if by <= self.allowed_lateness_ms || ev.imported.is_some() =>
                        {
                            match self
                                .refold(eval, active, st, events, ev, cur, until, by, now)
                                .await?
                            {
                                Refold::Done => (None, None),
                                Refold::Waits(cur) => {
                                    if let Some(slot) = st.leads.get_mut(&ev.lead) {
                                        slot.now = cur;
                                    }
                                    break;
                                }
                                Refold::Refused(cur, why) => (Some(cur), Some((by, Some(why)))),
                                Refold::Panicked(cause) => {
                                    return Ok(Drove::Panicked {
                                        lead: ev.lead.clone(),
                                        cause,
                                    })
                                }
                            }
                        }
                        (lead, Some((_, by))) => (Some(lead), Some((by, None))),
                        (lead, None) => (Some(lead), None),
                    };
                    let outcome = match lead {
                        // Re-folded: applied in its place.
                        None => Applied::Done,
                        Some(lead) => {
                            self.apply_in_order(
                                eval,
                                active,
                                st,
                                &ev.lead,
                                lead,
                                Input::Event(ev),
                                now,
                            )
                            .await?
                        }
                    };
                    if let (Applied::Done, Some((by, why))) = (&outcome, late) {
                        st.out.timeline.push(Entry::new(
                            &ev.lead,
                            ev.at,
                            TimelineKind::Late,
                            json!({
                                "event": ev.id,
                                "late_by_ms": by,
                                "allowed_ms": self.allowed_lateness_ms,
                                "reason": why.map_or(
                                    "later than the allowed lateness",
                                    NotRefolded::as_str,
                                ),
                            }),
                        ));
                        st.counts.late += 1;
                    }
                    match outcome {
                        Applied::Done => st.applied_idx.push(idx),
                        Applied::Waits => break,
                        Applied::Panicked(cause) => {
                            return Ok(Drove::Panicked {
                                lead: ev.lead.clone(),
                                cause,
                            })
                        }
                    }
                    st.agenda.event_applied(ev.at);
                    st.processed.push(p.seq);
                    st.counts.events += 1;
                    st.counts.received.push(p.received_at);
                }
                Due::Timer => {
                    let Some((key, (seq, timer))) = st.timers.pop_first() else {
                        continue;
                    };
                    let Some(lead) = self.take(st, &timer.lead).await? else {
                        // Set aside: the timer stays stored, not run.
                        continue;
                    };
                    if lead.is_some() {
                        match self
                            .apply_in_order(
                                eval,
                                active,
                                st,
                                &timer.lead,
                                lead,
                                Input::Timer(&timer),
                                now,
                            )
                            .await?
                        {
                            Applied::Done => {}
                            Applied::Waits => {
                                st.timers.insert(key, (seq, timer));
                                break;
                            }
                            Applied::Panicked(cause) => {
                                return Ok(Drove::Panicked {
                                    lead: timer.lead.clone(),
                                    cause,
                                })
                            }
                        }
                    } else if let Some(slot) = st.leads.get_mut(&timer.lead) {
                        // Taken out by take(): back as it was (no lead).
                        slot.now = lead;
                    }
                    if let Some(seq) = seq {
                        st.timers_done.push(seq);
                    }
                }
                Due::Tick { at, rules } => {
                    match self.tick(eval, active, st, at, &rules, budget, now).await? {
                        // What the tick did before the lead that waits is
                        // in `st`; the step commits it.
                        Some(Drove::Blocked) => break,
                        Some(d) => return Ok(d),
                        None => {}
                    }
                    if st.agenda.resuming() {
                        // Part done: this step commits it.
                        applied += 1;
                        break;
                    }
                }
            }
            applied += 1;
        }
        if !st.agenda.resuming() {
            st.tick_after = None;
        }
        Ok(Drove::Applied(applied + unreadable))
    }

    /// Runs the tick at `at` over the leads in id order, TICK_CHUNK stored
    /// ones per step, so a tick over a million leads never loads them all at
    /// once; a step halved to find a refused lead halves this too. The tick
    /// is done when the last chunk is; until then it goes on first.
    #[allow(clippy::too_many_arguments)]
    async fn tick(
        &self,
        eval: &Evaluator<'_>,
        active: &Active,
        st: &mut StepState,
        at: Timestamp,
        rules: &[usize],
        budget: i64,
        now: Timestamp,
    ) -> Result<Option<Drove>, StoreError> {
        let chunk = if budget >= BATCH { TICK_CHUNK } else { budget };
        let after = st.tick_after.take();
        // Only the leads it may change (eval::Wake): a tick skips the rest.
        let at_ms = millis(&at);
        let mut ids = self
            .store
            .lead_ids_after(
                st.part,
                after.as_deref(),
                chunk,
                (at_ms, eval.rules.wake_key),
            )
            .await?;
        // A full page may have more after it: stop at its last id.
        let cut = (ids.len() as i64 == chunk)
            .then(|| ids.last().cloned())
            .flatten();
        // Leads this step has (created, or changed since they were stored):
        // by their wake as they are now.
        ids.retain(|id| !st.leads.contains_key(id));
        ids.extend(
            st.leads
                .iter()
                .filter(|(_, s)| s.now.as_ref().is_some_and(|l| eval.tick_wake(l).due(at_ms)))
                .map(|(id, _)| id)
                .filter(|id| after.as_deref().is_none_or(|a| id.as_str() > a))
                .filter(|id| cut.as_ref().is_none_or(|c| *id <= c))
                .cloned(),
        );
        ids.sort_unstable();
        ids.dedup();
        // Load the ones not yet in this step, in bulk.
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !st.leads.contains_key(*id))
            .cloned()
            .collect();
        self.load_leads(st, &missing).await?;
        let mut done: Option<String> = None;
        for id in ids {
            // Set aside leads miss the tick.
            let lead = match self.take(st, &id).await? {
                Some(lead @ Some(_)) => lead,
                Some(None) => {
                    if let Some(slot) = st.leads.get_mut(&id) {
                        slot.now = None;
                    }
                    continue;
                }
                None => continue,
            };
            let input = Input::Tick { at, rules };
            match self
                .apply_in_order(eval, active, st, &id, lead, input, now)
                .await?
            {
                Applied::Done => st.counts.tick_leads += 1,
                Applied::Panicked(cause) => return Ok(Some(Drove::Panicked { lead: id, cause })),
                Applied::Waits => {
                    // The tick goes on from this lead in a later step.
                    match done.or(after) {
                        Some(last) => {
                            st.tick_after = Some(last);
                            st.agenda.suspend();
                        }
                        // Not begun: it begins again.
                        None => st.tick_after = None,
                    }
                    return Ok(Some(Drove::Blocked));
                }
            }
            done = Some(id);
        }
        match cut {
            // Commit this part; the next step resumes after `cut`.
            Some(cut) => {
                st.tick_after = Some(cut);
                st.agenda.suspend();
            }
            None => st.agenda.ticked(at),
        }
        Ok(None)
    }

    /// Applies one item to `lead` (apply()), in time order across
    /// partitions where a routing window is set: an item that read or
    /// changed the routing book while another partition has earlier work is
    /// undone and waits (book_may_change). Without a window nothing waits,
    /// so nothing is marked to undo (no copy of the lead per item).
    #[allow(clippy::too_many_arguments)]
    async fn apply_in_order(
        &self,
        eval: &Evaluator<'_>,
        active: &Active,
        st: &mut StepState,
        id: &str,
        lead: Option<LeadState>,
        input: Input<'_>,
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        // `consulted` tells whether this item read or changed the book; the
        // step remembers earlier items' in `book_used`.
        st.book_used |= st.book.consulted;
        st.book.consulted = false;
        let at = input.at();
        let mark = self.routing_window_ms.map(|_| Mark::of(st, &lead));
        if let Err(cause) = apply(eval, active, st, lead, input) {
            return Ok(Applied::Panicked(cause));
        }
        if let Some(mark) = mark {
            if st.book.consulted && !self.book_may_change(eval, st, at, now).await? {
                mark.undo(st, id);
                return Ok(Applied::Waits);
            }
        }
        Ok(Applied::Done)
    }

    /// Re-folds `current` for the late event `ev`: its stored events and
    /// those applied in this step, with `ev` in its place, up to `until`
    /// (sim::refold). What the event changed is collected as any decision
    /// is; the step's write replaces the lead's ledger, transitions and
    /// drip steps. The routing book is not touched.
    #[allow(clippy::too_many_arguments)]
    async fn refold(
        &self,
        eval: &Evaluator<'_>,
        active: &Active,
        st: &mut StepState,
        events: &[PendingEvent],
        ev: &Event,
        current: Option<LeadState>,
        until: Timestamp,
        by: i64,
        now: Timestamp,
    ) -> Result<Refold, StoreError> {
        let (mut applied, pruned) = self.store.applied_events(&ev.lead).await?;
        if pruned {
            // Part of the history is gone (retention): folding the rest
            // would make another lead. Applied as it arrives instead.
            return Ok(Refold::Refused(current, NotRefolded::Pruned));
        }
        applied.extend(
            st.applied_idx
                .iter()
                .filter_map(|&i| events.get(i).and_then(|p| p.event.as_ref().ok()))
                .filter(|e| e.lead == ev.lead)
                .cloned(),
        );
        // Steps queued, stored and in this step.
        let mut queued: std::collections::HashSet<String> = self
            .store
            .queued_drips(&ev.lead)
            .await?
            .into_iter()
            .collect();
        queued.extend(
            st.out
                .outbox
                .iter()
                .filter(|q| q.lead == ev.lead && q.kind == OutboxKind::Email)
                .filter_map(|q| q.payload["message_id"].as_str().map(str::to_string)),
        );
        let composer = &active.composer;
        let sent = |campaign: &str, cycle: u32, step: usize| {
            queued.contains(&composer.drip_message_id(&ev.lead, campaign, cycle, step))
        };
        let mut result = None;
        if let Err(cause) = contained(eval, || {
            result = Some(refold(eval, current.as_ref(), &applied, ev, until, &sent));
        }) {
            return Ok(Refold::Panicked(cause));
        }
        let Some(result) = result else {
            return Ok(Refold::Panicked("re-fold ended without a result".into()));
        };
        let Refolded {
            mut lead,
            effects,
            timers,
            kept,
            route_at,
            steps,
        } = match result {
            Ok(r) => r,
            Err(why) => return Ok(Refold::Refused(current, why)),
        };
        if let Some(at) = route_at {
            // Routed now, with the shared book: in time order across
            // partitions when a routing window is set.
            st.book_used |= st.book.consulted;
            if self.routing_window_ms.is_some() && !self.book_may_change(eval, st, at, now).await? {
                return Ok(Refold::Waits(current));
            }
        }
        // Steps queued that the re-folded history does not send: kept.
        let refolded_ids: std::collections::HashSet<String> = steps
            .iter()
            .map(|(c, cycle, step)| composer.drip_message_id(&ev.lead, c, *cycle, *step))
            .collect();
        let kept = kept
            + queued
                .iter()
                .filter(|id| !refolded_ids.contains(*id))
                .count();
        let detail = json!({
            "event": ev.id,
            "late_by_ms": by,
            "score": {"from": current.as_ref().map(|c| c.score), "to": lead.score},
            "stage": {"from": current.as_ref().map(|c| c.stage), "to": lead.stage},
            "added": effects.len(),
            "kept": kept,
        });
        // An email of a cycle since ended names its own (Effect::SendEmail).
        for (at, e) in effects {
            let d = crate::eval::Decision {
                lead,
                effects: vec![e],
            };
            lead = st.take_in(active, d, at);
        }
        if let Some(at) = route_at {
            let mut routed = None;
            let book = &mut st.book;
            if let Err(cause) = contained(eval, || routed = Some(eval.route_now(lead, book, at))) {
                return Ok(Refold::Panicked(cause));
            }
            let Some(d) = routed else {
                return Ok(Refold::Panicked("routing ended without a decision".into()));
            };
            // Its SLA clock goes into the step's due work.
            lead = st.take_in(active, d, at);
        }
        for t in timers {
            st.schedule(t);
        }
        st.out
            .timeline
            .push(Entry::new(&ev.lead, ev.at, TimelineKind::Refolded, detail));
        st.refolded.insert(ev.lead.clone());
        st.counts.refolded += 1;
        st.put(lead);
        Ok(Refold::Done)
    }

    /// Whether an item at `at` of this step's partition may read or change
    /// the routing book now: only when every other partition's next item
    /// (its next event, due work, a due `schedule` tick) is later (or less
    /// than the routing window earlier), so owners'
    /// loads and rotations change in the order of time, as in `simulate`,
    /// however the partitions are spread over workers and daemons. At the
    /// same moment, the lower partition goes first. If not, the item waits
    /// for a later step. The partition whose next item is the earliest is
    /// never held back, so some partition always goes on.
    async fn book_may_change(
        &self,
        eval: &Evaluator<'_>,
        st: &mut StepState,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(window) = self.routing_window_ms else {
            return Ok(true);
        };
        if st.others.is_none() {
            // Each other partition's earliest work, computed once a step
            // (the schedule's next time is slow to find).
            let others = self.store.other_partitions(now, st.part).await?;
            let first = others
                .iter()
                .map(|o| {
                    let tick = o
                        .ticked_to
                        .and_then(|from| eval.next_schedule(from))
                        .map(|(t, _)| t)
                        .filter(|t| *t <= now || o.resuming);
                    let first = [o.event_at, o.timer_at, tick].into_iter().flatten().min();
                    (o.part, first)
                })
                .collect();
            st.others = Some(first);
        }
        let part = st.part;
        // Compared in stored precision (milliseconds): an event keeps the
        // fraction it was sent with, its row's `at` does not.
        let at = crate::store::millis(&at).saturating_sub(window);
        let ok = st.others.iter().flatten().all(|(q, first)| match first {
            None => true,
            Some(t) => {
                let t = crate::store::millis(t);
                t > at || (t == at && *q > part)
            }
        });
        if !ok {
            st.waited = true;
        }
        Ok(ok)
    }

    /// Writes what a step decided in one transaction, if nothing it read
    /// changed meanwhile (`Ok(false)`: something did, nothing was written).
    /// `Err`: the database refused the data (a lead's); other failures
    /// are the outer `Err`.
    async fn write(
        &self,
        w: &Writes,
        state: &EngineState,
        book_changed: bool,
        now: Timestamp,
    ) -> Result<Result<bool, StoreError>, StoreError> {
        // Checked before the write lock: a lead whose rows could not be
        // stored, or read back, is named and set aside.
        let rows = match lead_rows(w, now) {
            Ok(rows) => rows,
            Err(error) => return Ok(Err(error)),
        };
        let Some(mut tx) = StepTx::begin(&self.store, state, book_changed).await? else {
            return Ok(Ok(false));
        };
        let written = async {
            tx.write(w, rows, now).await?;
            tx.set_engine_state(state).await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => Ok(Ok(true)),
            Err(error) if error.is_lead_data() => Ok(Err(error)),
            Err(error) => Err(error),
        }
    }

    /// Counts what a committed step did.
    fn committed(&self, c: Counts, w: &Writes) {
        let m = &self.metrics;
        m.events_processed.inc_by(c.events);
        // Rule errors and SLA breaches by rule, plugin and owner: the notes
        // that counted them (writes.rs, `collect`) name them.
        for e in w.timeline.iter().filter(|e| e.kind == TimelineKind::Note) {
            let text = |k: &str| e.detail.get(k).and_then(|v| v.as_str()).unwrap_or("");
            match text("note") {
                error @ ("condition_error" | "not_a_number" | "plugin_failed") => {
                    m.rule_errors
                        .get_or_create(&RuleErrorLabels {
                            error: error.to_string(),
                            rule: text("rule").to_string(),
                            plugin: text("plugin").to_string(),
                        })
                        .inc();
                }
                "sla_breached" => {
                    m.sla_breaches
                        .get_or_create(&OwnerLabels {
                            owner: text("owner").to_string(),
                        })
                        .inc();
                }
                _ => {}
            }
        }
        m.emails_not_composed.inc_by(c.not_composed);
        m.withheld.inc_by(c.withheld);
        m.events_refolded.inc_by(c.refolded);
        m.events_late.inc_by(c.late);
        m.tick_leads.inc_by(c.tick_leads);
        for e in w
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::EmailNotComposed)
        {
            let error = e.detail.get("error").and_then(|v| v.as_str()).unwrap_or("");
            tracing::warn!(lead = %e.lead, %error, "email not composed");
        }
        let done = self.clock.now();
        for received in c.received {
            let secs = (done - received).num_microseconds().unwrap_or(0) as f64 / 1e6;
            m.processing_latency.observe(secs.max(0.0));
        }
    }

    /// Loads the stored leads among `ids` not yet in this step, in bulk; a
    /// lead whose state does not read back is set aside with the reason.
    async fn load_leads(&self, st: &mut StepState, ids: &[String]) -> Result<(), StoreError> {
        let wake_key = st.wake_key;
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| !st.leads.contains_key(*id) && !st.aside.contains_key(*id))
            .cloned()
            .collect();
        for stored in self.store.load_leads(&ids).await? {
            match stored.state {
                Ok(lead) => {
                    st.leads.insert(
                        stored.id,
                        Slot {
                            before: Some(lead.clone()),
                            now: Some(lead),
                            stale_wake: stored.tick_rules != Some(wake_key),
                        },
                    );
                }
                Err(cause) => {
                    st.aside.insert(stored.id, cause);
                }
            }
        }
        for id in ids {
            if !st.aside.contains_key(&id) {
                st.leads.entry(id).or_insert(Slot {
                    before: None,
                    now: None,
                    stale_wake: false,
                });
            }
        }
        Ok(())
    }

    /// The lead for the next item, from this step's cache or the database:
    /// `None` if it is set aside, `Some(None)` if it is new.
    async fn take(
        &self,
        st: &mut StepState,
        id: &str,
    ) -> Result<Option<Option<LeadState>>, StoreError> {
        if !st.leads.contains_key(id) {
            self.load_leads(st, &[id.to_string()]).await?;
        }
        if st.aside.contains_key(id) {
            return Ok(None);
        }
        st.touched.insert(id.to_string());
        Ok(Some(st.leads.get_mut(id).and_then(|s| s.now.take())))
    }
}

/// Applies one input to `lead`, with a panic contained, and takes in what it
/// decided (writes::collect): the lead, its timeline entries, its timers,
/// its messages composed from the lead as decided.
fn apply(
    eval: &Evaluator<'_>,
    active: &Active,
    st: &mut StepState,
    lead: Option<LeadState>,
    input: Input<'_>,
) -> Result<(), String> {
    let at = input.at();
    contained(eval, || {
        let Some(d) = eval.apply(lead, &mut st.book, input) else {
            return;
        };
        let lead = st.take_in(active, d, at);
        st.put(lead);
    })
}

impl StepState {
    /// Takes in what a decision at `at` left (writes::collect): its
    /// timeline entries and messages (composed from the lead as decided)
    /// into the step's writes, its timers into the step's due work; gives
    /// the lead back.
    fn take_in(&mut self, active: &Active, d: crate::eval::Decision, at: Timestamp) -> LeadState {
        let timers = self.out.timers.len();
        let lead = collect_decision(&active.composer, &active.rules, d, at, &mut self.out);
        let made: Vec<Timer> = self.out.timers.drain(timers..).collect();
        for t in made {
            self.schedule(t);
        }
        lead
    }

    /// Work due later, made in this step (not stored yet).
    fn schedule(&mut self, t: Timer) {
        self.order += 1;
        self.timers.insert((t.at, self.order), (None, t));
    }

    /// The lead as this step leaves it.
    fn put(&mut self, lead: LeadState) {
        let id = lead.id.clone();
        self.leads
            .entry(id)
            .or_insert(Slot {
                before: None,
                now: None,
                stale_wake: false,
            })
            .now = Some(lead);
    }
}

/// The step's state as writes: changed leads, new timers not run, the
/// quarantine; and the engine's state, whether the book changed, counts,
/// leads set aside and touched.
fn collect(
    st: StepState,
    eval: &Evaluator<'_>,
) -> (
    Writes,
    EngineState,
    bool,
    Counts,
    BTreeMap<String, String>,
    BTreeSet<String>,
) {
    let StepState {
        part,
        book,
        book_read,
        book_used,
        book_version,
        agenda,
        tick_after,
        version,
        leads,
        timers,
        out,
        processed,
        timers_done,
        aside,
        touched,
        counts,
        refolded,
        ..
    } = st;
    let counts = Counts {
        not_composed: out.not_composed,
        withheld: out.withheld,
        ..counts
    };
    let mut changed = Vec::new();
    let mut ticks = TickWakes {
        key: Some(eval.rules.wake_key),
        ..TickWakes::default()
    };
    for slot in leads.into_values() {
        if let Some(lead) = slot.now {
            // A wake only where one is written: unchanged leads keep theirs.
            if slot.before.as_ref() != Some(&lead) {
                ticks.at.push(eval.tick_wake(&lead).column());
                changed.push((slot.before, lead));
            } else if slot.stale_wake {
                let wake = eval.tick_wake(&lead).column();
                ticks.refresh.push((lead.id, wake));
            }
        }
    }
    let w = Writes {
        processed,
        timers_done,
        timers_new: timers
            .into_values()
            .filter(|(seq, _)| seq.is_none())
            .map(|(_, t)| t)
            .collect(),
        leads: changed,
        timeline: out.timeline,
        outbox: out.outbox,
        quarantine: aside
            .iter()
            .map(|(lead, cause)| (lead.clone(), storable(cause)))
            .collect(),
        refolded: refolded.into_iter().collect(),
        ticks,
    };
    // A step whose decisions read the book checks it is unchanged when it
    // commits, as one that changed it does.
    let book_changed = book_used || book.consulted || book != book_read;
    let state = EngineState {
        part,
        book,
        book_version,
        ticked_to: agenda.ticked_to(),
        tick_after,
        version,
    };
    (w, state, book_changed, counts, aside, touched)
}

/// At most this many event ids and leads are named in a step's span; the
/// counts and the first and last `seq` cover the rest.
const NAMED: usize = 10;

/// Records on the step's span what it loaded: its events (count, first and
/// last `seq`, the first ids), due timers, and the leads they are for.
fn name_in_span(events: &[PendingEvent], st: &StepState) {
    let span = tracing::Span::current();
    if span.is_disabled() || (events.is_empty() && st.timers.is_empty()) {
        return;
    }
    let list = |items: Vec<&str>, total: usize| {
        let mut s = items.join(",");
        if total > items.len() {
            s.push_str(&format!(",…(+{})", total - items.len()));
        }
        s
    };
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|p| p.event.as_ref().ok().map(|e| e.id.as_str()))
        .take(NAMED)
        .collect();
    let mut leads: Vec<&str> = events
        .iter()
        .filter_map(|p| p.event.as_ref().ok().map(|e| e.lead.as_str()))
        .chain(st.timers.values().map(|(_, t)| t.lead.as_str()))
        .collect();
    leads.sort_unstable();
    leads.dedup();
    let lead_count = leads.len();
    leads.truncate(NAMED);
    span.record("events", events.len());
    if let (Some(lo), Some(hi)) = (
        events.iter().map(|p| p.seq).min(),
        events.iter().map(|p| p.seq).max(),
    ) {
        span.record("first_seq", lo);
        span.record("last_seq", hi);
    }
    span.record("ids", list(ids, events.len()));
    span.record("timers", st.timers.len());
    span.record("leads", list(leads, lead_count));
}

fn panicked(lead: &str, cause: String) -> Attempt {
    tracing::error!(%lead, %cause, "evaluating a lead panicked; setting it aside");
    Attempt::Panicked {
        lead: lead.to_string(),
        cause,
    }
}

/// A cause as the quarantine table and the timeline can hold it: no NUL,
/// bounded (a panic message may carry anything).
fn storable(cause: &str) -> String {
    let cause = cause.replace('\0', "\\u0000");
    bounds::truncate(&cause, bounds::MAX_TEXT_BYTES).to_string()
}

/// Runs one item's evaluation, with a panic in it contained: the panic's
/// message is the error, and what the item was doing is to be discarded.
/// With plugins, a call may take up to its timeout, so it runs as blocking
/// work rather than stalling the runtime's other tasks.
fn contained(eval: &Evaluator<'_>, f: impl FnOnce()) -> Result<(), String> {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let run = || catch_unwind(AssertUnwindSafe(f)).map_err(panic_message);
    if eval.plugins.is_some() && multi {
        tokio::task::block_in_place(run)
    } else {
        run()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("evaluation panicked: {text}")
}

/// The plugin host, counting calls in flight (`nurture_plugin_calls_in_flight`).
struct Counted<'a> {
    host: &'a crate::plugins::Host,
    in_flight: &'a Gauge,
}

impl PluginHost for Counted<'_> {
    fn call(
        &self,
        plugin: &Plugin,
        lead: &LeadState,
        event: &Event,
    ) -> Result<Vec<PluginEffect>, String> {
        self.in_flight.inc();
        // Dropped on every way out of the call, a panic's too.
        struct Done<'g>(&'g Gauge);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let _done = Done(self.in_flight);
        self.host.call(plugin, lead, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_an_evaluation_is_contained_with_its_message() {
        let rules = crate::rules::Ruleset::from_text(std::path::Path::new("r.yaml"), "")
            .unwrap_or_else(|d| panic!("{d}"));
        let eval = Evaluator::new(&rules);
        let mut touched = false;
        assert_eq!(contained(&eval, || touched = true), Ok(()));
        assert!(touched);
        let err = contained(&eval, || panic!("lead {} broke it", "u1")).unwrap_err();
        assert_eq!(err, "evaluation panicked: lead u1 broke it");
    }

    #[test]
    fn a_cause_is_stored_without_nul_and_bounded() {
        assert_eq!(storable("a\0b"), "a\\u0000b");
        let long = "é".repeat(bounds::MAX_TEXT_BYTES);
        let s = storable(&long);
        assert!(s.len() <= bounds::MAX_TEXT_BYTES && s.chars().all(|c| c == 'é'));
    }
}
