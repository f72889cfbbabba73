//! Applies accepted events and due work through the evaluator, a batch per
//! transaction (group commit), in the same order `simulate` uses: work due at
//! or before an event's time runs before it, timers before `schedule` ticks.

use super::metrics::Metrics;
use super::{Active, RulesHandle};
use crate::eval::{Decision, Effect, Evaluator, Note, Timer};
use crate::model::{time::Timestamp, LeadState};
use crate::store::{EngineState, StepTx, Store, StoreError, Writes};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Most events applied in one transaction. With SQLite's one writer, a step
/// holds off ingest for its length: 100 keeps that to ~30 ms (batch ingest
/// 10,000 → 28,000–33,000 events/s acknowledged against 500, docs/benchmarks.md)
/// and processing throughput did not measurably fall.
pub const BATCH: i64 = 100;

/// Most stored leads one step runs a `schedule` tick over; a longer tick goes
/// on in the following steps, before anything else (docs/daemon.md).
pub const TICK_CHUNK: i64 = 1_000;

pub struct Processor {
    pub store: Store,
    pub rules: RulesHandle,
    pub metrics: Arc<Metrics>,
}

/// A lead as loaded and as it is now, within one step.
struct Slot {
    before: Option<LeadState>,
    now: Option<LeadState>,
}

/// What one step has loaded and decided so far.
#[derive(Default)]
struct StepState {
    leads: HashMap<String, Slot>,
    /// Due timers by (time, arrival order); the seq of stored ones.
    timers: BTreeMap<(Timestamp, u64), (Option<i64>, Timer)>,
    order: u64,
    w: Writes,
}

enum Next {
    Event(usize),
    Timer,
    Tick(Timestamp, Vec<usize>),
}

impl Processor {
    /// One step: applies what is pending and due at `now`, commits, and
    /// returns how many items it applied (0: nothing to do).
    pub async fn step(&self, now: Timestamp) -> Result<usize, StoreError> {
        let active = self.rules.current();
        let eval = active.evaluator();
        let mut tx = StepTx::begin(&self.store).await?;
        let EngineState {
            mut book,
            mut ticked_to,
            mut tick_after,
        } = tx.engine_state().await?;
        let events = tx.pending_events(BATCH).await?;
        // With more events waiting than this batch holds, due work later than
        // the batch's last event waits for a later step, so order holds.
        let horizon = if events.len() as i64 == BATCH {
            events
                .iter()
                .rev()
                .find_map(|e| e.event.as_ref().ok().map(|e| e.at))
                .unwrap_or(now)
                .min(now)
        } else {
            now
        };
        let mut st = StepState::default();
        for (seq, t) in tx.due_timers(horizon, BATCH).await? {
            st.order += 1;
            st.timers.insert((t.at, st.order), (Some(seq), t));
        }

        // The leads this batch touches, in one query.
        let mut wanted: Vec<String> = events
            .iter()
            .filter_map(|p| p.event.as_ref().ok().map(|e| e.lead.clone()))
            .collect();
        wanted.extend(st.timers.values().map(|(_, t)| t.lead.clone()));
        wanted.sort_unstable();
        wanted.dedup();
        load_into(&mut tx, &mut st.leads, &wanted).await?;
        for id in wanted {
            st.leads.entry(id).or_insert(Slot {
                before: None,
                now: None,
            });
        }
        let mut applied = 0usize;
        let mut next_event = 0usize;
        let mut latencies = Vec::new();
        loop {
            // Skip events that can no longer be read (erased before applied).
            while let Some(p) = events.get(next_event) {
                if p.event.is_ok() {
                    break;
                }
                st.w.processed.push(p.seq);
                next_event += 1;
            }
            let event_at = events
                .get(next_event)
                .and_then(|p| p.event.as_ref().ok())
                .map(|e| e.at);
            let limit = event_at.map_or(horizon, |a| a.min(horizon));
            let timer_at = st.timers.keys().next().map(|k| k.0).filter(|a| *a <= limit);
            let tick = ticked_to
                .and_then(|from| eval.next_schedule(from))
                .filter(|(a, _)| *a <= limit);
            let next = match (timer_at, tick, event_at) {
                // A tick left part done by the last step goes on first.
                _ if tick_after.is_some() => match ticked_to.and_then(|f| eval.next_schedule(f)) {
                    Some((k, rules)) => Next::Tick(k, rules),
                    None => {
                        // The rules changed and schedule nothing more.
                        tick_after = None;
                        continue;
                    }
                },
                (Some(t), Some((k, _)), _) if t <= k => Next::Timer,
                (Some(_), None, _) => Next::Timer,
                (_, Some((k, rules)), _) => Next::Tick(k, rules),
                (None, None, Some(_)) => Next::Event(next_event),
                (None, None, None) => break,
            };
            match next {
                Next::Event(i) => {
                    next_event += 1;
                    let p = &events[i];
                    let Ok(ev) = &p.event else { continue };
                    if ticked_to.is_none() {
                        ticked_to = Some(ev.at);
                    }
                    let lead = self.take(&mut tx, &mut st.leads, &ev.lead).await?;
                    st.w.timeline.push((
                        ev.lead.clone(),
                        ev.at,
                        "event",
                        json!({"id": ev.id, "type": ev.kind}),
                    ));
                    let lens = Lens::of(lead.as_ref());
                    let d = blocking(&eval, || eval.on_event(lead, &mut book, ev));
                    self.absorb(&active, &mut st, ev.at, lens, d);
                    st.w.processed.push(p.seq);
                    latencies.push(p.received_at);
                    self.metrics.events_processed.inc();
                }
                Next::Timer => {
                    let Some((_, (seq, timer))) = st.timers.pop_first() else {
                        continue;
                    };
                    if let Some(seq) = seq {
                        st.w.timers_done.push(seq);
                    }
                    if let Some(lead) = self.take(&mut tx, &mut st.leads, &timer.lead).await? {
                        let lens = Lens::of(Some(&lead));
                        let d = blocking(&eval, || eval.on_timer(lead, &mut book, &timer));
                        self.absorb(&active, &mut st, timer.at, lens, d);
                    }
                }
                Next::Tick(at, which) => {
                    // Leads in id order, TICK_CHUNK stored ones per step, so a
                    // tick over a million leads never loads them all at once.
                    let after = tick_after.take();
                    let mut ids = tx.lead_ids_after(after.as_deref(), TICK_CHUNK).await?;
                    // A full page may have more after it: stop at its last id.
                    let cut = (ids.len() as i64 == TICK_CHUNK)
                        .then(|| ids.last().cloned())
                        .flatten();
                    // Leads created in this step are not stored yet.
                    ids.extend(
                        st.leads
                            .iter()
                            .filter(|(_, s)| s.now.is_some())
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
                    load_into(&mut tx, &mut st.leads, &missing).await?;
                    for id in ids {
                        if let Some(lead) = self.take(&mut tx, &mut st.leads, &id).await? {
                            let lens = Lens::of(Some(&lead));
                            let d =
                                blocking(&eval, || eval.on_schedule(lead, &mut book, at, &which));
                            self.absorb(&active, &mut st, at, lens, d);
                        }
                    }
                    if let Some(cut) = cut {
                        // Commit this part; the next step resumes after `cut`.
                        tick_after = Some(cut);
                        applied += 1;
                        break;
                    }
                    ticked_to = Some(at);
                }
            }
            applied += 1;
        }
        if applied == 0 {
            // Nothing to do: end the transaction without writing.
            return Ok(0);
        }

        let StepState {
            leads,
            timers,
            mut w,
            ..
        } = st;
        for slot in leads.into_values() {
            if let Some(lead) = slot.now {
                if slot.before.as_ref() != Some(&lead) {
                    w.leads.push((slot.before, lead));
                }
            }
        }
        w.timers_new = timers
            .into_values()
            .filter(|(seq, _)| seq.is_none())
            .map(|(_, t)| t)
            .collect();
        tx.write(&w, now).await?;
        tx.set_engine_state(&EngineState {
            book,
            ticked_to,
            tick_after,
        })
        .await?;
        tx.commit().await?;
        let done = chrono::Utc::now();
        for received in latencies {
            let secs = (done - received).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.processing_latency.observe(secs.max(0.0));
        }
        Ok(applied)
    }

    /// The lead for the next item, from this step's cache or the database.
    async fn take(
        &self,
        tx: &mut StepTx<'_>,
        leads: &mut HashMap<String, Slot>,
        id: &str,
    ) -> Result<Option<LeadState>, StoreError> {
        if let Some(slot) = leads.get_mut(id) {
            return Ok(slot.now.take());
        }
        let before = tx.load_lead(id).await?;
        let now = before.clone();
        leads.insert(id.to_string(), Slot { before, now: None });
        Ok(now)
    }

    /// Takes in one item's decision: the lead, its timeline entries, its
    /// timers, and its messages, composed now from the lead as decided.
    fn absorb(&self, active: &Active, st: &mut StepState, at: Timestamp, lens: Lens, d: Decision) {
        let Decision { lead, effects } = d;
        let id = lead.id.clone();
        let w = &mut st.w;
        for (at, kind, detail) in history_entries(lens, &lead) {
            w.timeline.push((id.clone(), at, kind, detail));
        }
        for e in effects {
            match e {
                Effect::Schedule(t) => {
                    st.order += 1;
                    st.timers.insert((t.at, st.order), (None, t));
                }
                Effect::Note(note) => {
                    if matches!(
                        note,
                        Note::ConditionError { .. } | Note::PluginFailed { .. }
                    ) {
                        self.metrics.rule_errors.inc();
                    }
                    if matches!(note, Note::SlaBreached { .. }) {
                        self.metrics.sla_breaches.inc();
                    }
                    w.timeline.push((
                        id.clone(),
                        at,
                        "note",
                        serde_json::to_value(&note).unwrap_or(Value::Null),
                    ));
                }
                Effect::Webhook { .. } => {
                    let payload = serde_json::to_value(&e).unwrap_or(Value::Null);
                    w.timeline
                        .push((id.clone(), at, "webhook", payload.clone()));
                    // A webhook's body is fixed now, from the lead as decided.
                    let payload = crate::webhooks::outbox_payload(&e, &lead, at).unwrap_or(payload);
                    w.outbox.push((id.clone(), "webhook", payload));
                }
                mail => {
                    let kind = match &mail {
                        Effect::SendEmail { .. } => "email",
                        _ => "notification",
                    };
                    let mut entry = serde_json::to_value(&mail).unwrap_or(Value::Null);
                    match active.composer.compose(&active.rules, &lead, &mail, at) {
                        Ok(messages) => {
                            let ids: Vec<&str> =
                                messages.iter().map(|m| m.message_id.as_str()).collect();
                            entry["message_ids"] = json!(ids);
                            for m in &messages {
                                let payload = serde_json::to_value(m).unwrap_or(Value::Null);
                                w.outbox.push((id.clone(), kind, payload));
                            }
                            w.timeline.push((id.clone(), at, kind, entry));
                        }
                        Err(err) => {
                            self.metrics.emails_not_composed.inc();
                            tracing::warn!(lead = %id, error = %err, "email not composed");
                            entry["error"] = json!(err.to_string());
                            w.timeline
                                .push((id.clone(), at, "email_not_composed", entry));
                        }
                    }
                }
            }
        }
        let slot = st.leads.entry(id).or_insert(Slot {
            before: None,
            now: None,
        });
        slot.now = Some(lead);
    }
}

/// Loads the stored leads among `ids` into this step's cache, in bulk.
async fn load_into(
    tx: &mut StepTx<'_>,
    leads: &mut HashMap<String, Slot>,
    ids: &[String],
) -> Result<(), StoreError> {
    for lead in tx.load_leads(ids).await? {
        let before = Some(lead.clone());
        leads.insert(
            lead.id.clone(),
            Slot {
                before,
                now: Some(lead),
            },
        );
    }
    Ok(())
}

/// How long a lead's ledger, transitions and assignments were before an item.
#[derive(Clone, Copy, Default)]
struct Lens(usize, usize, usize);

impl Lens {
    fn of(lead: Option<&LeadState>) -> Lens {
        lead.map_or(Lens::default(), |l| {
            Lens(l.ledger.len(), l.transitions.len(), l.assignments.len())
        })
    }
}

/// Timeline entries for what an item added to a lead's ledger, stage history
/// and assignments.
fn history_entries(before: Lens, after: &LeadState) -> Vec<(Timestamp, &'static str, Value)> {
    let mut out = Vec::new();
    for e in after.ledger.iter().skip(before.0) {
        out.push((
            e.at,
            "scored",
            json!({"rule": e.rule, "points": e.points, "event": e.event, "reason": e.reason}),
        ));
    }
    for t in after.transitions.iter().skip(before.1) {
        out.push((t.at, "stage_changed", json!({"from": t.from, "to": t.to})));
    }
    for a in after.assignments.iter().skip(before.2) {
        out.push((a.at, "assigned", json!({"owner": a.owner, "rule": a.rule})));
    }
    out
}

/// Runs an evaluation. With plugins, a call may take up to its timeout, so it
/// runs as blocking work rather than stalling the runtime's other tasks.
fn blocking<T>(eval: &Evaluator<'_>, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if eval.plugins.is_some() && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
