//! The daemon's mail sender: claims due outbox rows, sends them concurrently
//! (bounded), and records each outcome as soon as it is known, grouping the
//! outcomes that arrive together into one commit.
//!
//! Exactly once, and the window left: a row is marked `sending` (committed)
//! before its message leaves and `sent` right after the server accepts it.
//! A crash between the server's acceptance and that commit leaves the row
//! `sending`; it is sent again, with the same Message-ID, after a restart
//! (SQLite) or when its lease runs out (PostgreSQL). The file transport can
//! tell a message went out and never writes it twice; an SMTP server cannot
//! be asked, so such a message may arrive twice, and receivers can de-duplicate
//! it by its Message-ID. Each such resend is logged and counted.
//!
//! Rows are claimed, leased, renewed and settled through the outbox's lease
//! protocol (`store/outbox.rs`); transient failures are retried on
//! `daemon::retry::MAIL`, but not past the server's return: after a
//! transient failure the server is probed (`retry::PROBE`), and once it
//! answers, or a send works, every row waiting on its backoff is due at once.
//! On stop, claimed rows not yet on the wire are
//! released: due again at the next start, their try not counted.

use super::compose::Outgoing;
use super::transport::{SendError, Transport, CONCURRENCY};
use crate::clock::Clock;
use crate::daemon::metrics::{MailLabels, Metrics};
use crate::daemon::retry::{Retries, MAIL, PROBE, RECORD};
use crate::model::Event;
use crate::store::{Note, OutboxKind, OutboxRow, Outcome, Settle, Store};
use nurture_core::writes::TimelineKind;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

/// Rows claimed and not yet recorded, at most.
const WINDOW: usize = 4 * CHUNK;
/// Messages sent (or on the wire) whose outcome is not yet recorded, at
/// most: what a crash can make go out twice. Outcome commits queue behind
/// the processor's writes; this keeps that backlog bounded however large
/// the claims.
const UNRECORDED: usize = 256;
/// Rows claimed at once. Each claim is a write transaction that queues behind
/// outcome commits on SQLite's one writer; 64 at a time, claiming took most
/// of the sender's time (docs/benchmarks.md, "Email").
const CHUNK: usize = 256;
/// How long a claimed row belongs to its sender; a live sender renews the
/// leases of its sends in flight every `RENEW`, so a row whose lease ran out
/// was left by a sender that died.
const LEASE: Duration = Duration::from_secs(30);
const RENEW: Duration = Duration::from_secs(10);

pub struct Sender {
    pub store: Store,
    pub transport: Arc<Transport>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// A finished send on its way to being recorded; the slots it holds are
/// freed only once its outcome is committed.
struct Done {
    row: OutboxRow,
    outcome: Outcome,
    note: Option<Note>,
    /// A hard bounce, for the core.
    bounce: Option<Event>,
    _slots: (Arc<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
}

/// What the sends tell the sender's loop about the server.
#[derive(Default)]
struct SendHealth {
    /// A send failed transiently, and none worked since.
    outage: AtomicBool,
    /// A send worked while `outage` was set.
    recovered: AtomicBool,
    /// A send worked.
    sent: AtomicBool,
}

impl SendHealth {
    fn saw(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Retry { .. } => self.outage.store(true, Ordering::Relaxed),
            Outcome::Sent => {
                self.sent.store(true, Ordering::Relaxed);
                if self.outage.swap(false, Ordering::Relaxed) {
                    self.recovered.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// The claims in flight: `seq` → `attempts`, their leases' tokens.
type InFlight = Arc<Mutex<HashMap<i64, i64>>>;

impl Sender {
    /// Runs until `stop`; messages on the wire finish and are recorded
    /// first, and claimed rows not yet on it are released.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        if self.store.backend == crate::store::Backend::Sqlite {
            match self.store.release_abandoned(OutboxKind::MAIL).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    rows = n,
                    "messages were being sent when the daemon stopped; they go out again with the same Message-ID"
                ),
                Err(e) => tracing::error!(error = %e, "releasing abandoned sends failed"),
            }
        }
        self.pump(Some(stop)).await;
    }

    /// Sends everything that is due now, and returns how many rows it
    /// handled (benchmarks and tests).
    pub async fn drain(&self) -> usize {
        self.pump(None).await
    }

    /// Keeps up to `WINDOW` rows claimed and `CONCURRENCY` messages on the
    /// wire: rows are claimed `CHUNK` at a time as room frees up, so claims
    /// and outcomes share commits. After a crash at most `WINDOW` rows can
    /// have an unknown outcome, and at most `UNRECORDED` of them went out.
    async fn pump(&self, mut stop: Option<watch::Receiver<bool>>) -> usize {
        let gate = Arc::new(Semaphore::new(WINDOW));
        let wire = Arc::new(Semaphore::new(CONCURRENCY));
        let unrecorded = Arc::new(Semaphore::new(UNRECORDED));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let in_flight: InFlight = Arc::default();
        let recorder = tokio::spawn(record(
            self.store.clone(),
            self.clock.clone(),
            done_rx,
            in_flight.clone(),
            stop.clone(),
        ));
        let renewer = tokio::spawn(renew(
            self.store.clone(),
            self.clock.clone(),
            in_flight.clone(),
        ));
        let mut handled = 0;
        let mut retries = Retries::default();
        // The server failed a send (transient): probe it until it answers,
        // then everything waiting on its backoff is due at once. A send
        // that works after a failure says the same. A server that answers
        // probes but still fails sends (4xx) is believed less each time:
        // the next reset waits as a retry would (`resets`, cleared by a
        // send that works).
        let health = Arc::new(SendHealth::default());
        let mut probes = 0u32;
        let mut resets = 0u32;
        let mut next_probe = tokio::time::Instant::now();
        loop {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                break;
            }
            let mut due_now = false;
            if health.sent.swap(false, Ordering::Relaxed) {
                resets = 0;
            }
            if health.recovered.swap(false, Ordering::Relaxed) {
                probes = 0;
                due_now = true;
            } else if health.outage.load(Ordering::Relaxed)
                && tokio::time::Instant::now() >= next_probe
            {
                match self.transport.probe().await {
                    Ok(()) => {
                        health.outage.store(false, Ordering::Relaxed);
                        probes = 0;
                        resets += 1;
                        next_probe = tokio::time::Instant::now() + MAIL.curve.delay(resets);
                        due_now = true;
                    }
                    Err(e) => {
                        probes += 1;
                        tracing::debug!(error = ?e, "the mail server is still unreachable");
                        next_probe = tokio::time::Instant::now() + PROBE.delay(probes);
                    }
                }
            }
            if due_now {
                match self
                    .store
                    .retry_now(OutboxKind::MAIL, self.clock.now())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        messages = n,
                        "the mail server is reachable again: messages waiting on a retry are due now"
                    ),
                    // Not lost: they go when their backoff says.
                    Err(e) => tracing::warn!(error = %e, "making retries due failed"),
                }
            }
            let Ok(room) = gate.clone().acquire_many_owned(CHUNK as u32).await else {
                break;
            };
            if stop.is_some() && matches!(self.store.outbox_hold().await, Ok(Some(_))) {
                // Held (a restore): nothing is claimed until released.
                self.metrics.outbox_held_polls.inc();
                drop(room);
                if !idle(&mut stop, Duration::from_millis(200)).await {
                    break;
                }
                continue;
            }
            // The chunk's room is freed when its last row is recorded.
            let room = Arc::new(room);
            let now = self.clock.now();
            let lease = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            let rows = match self
                .store
                .claim(OutboxKind::MAIL, now, lease, CHUNK as i64)
                .await
            {
                Ok(rows) => {
                    retries.succeeded();
                    rows
                }
                Err(e) => {
                    let wait = retries.failed("claiming mail", &e, &self.metrics);
                    drop(room);
                    if !idle(&mut stop, wait).await {
                        break;
                    }
                    continue;
                }
            };
            if rows.is_empty() {
                drop(room);
                if stop.is_none() {
                    // Draining: done once nothing is in flight or due.
                    if gate.available_permits() == WINDOW && self.nothing_due().await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                if !idle(&mut stop, Duration::from_millis(200)).await {
                    break;
                }
                continue;
            }
            handled += rows.len();
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(rows.iter().map(|r| (r.seq, r.attempts)));
            for row in rows {
                let permit = room.clone();
                let wire = wire.clone();
                let unrecorded = unrecorded.clone();
                let transport = self.transport.clone();
                let metrics = self.metrics.clone();
                let clock = self.clock.clone();
                let done = done_tx.clone();
                let stop = stop.clone();
                let health = health.clone();
                let span = tracing::info_span!("send", lead = %row.lead, seq = row.seq);
                tokio::spawn(
                    async move {
                        let pending = unrecorded.acquire_owned().await.ok();
                        let on_wire = wire.acquire_owned().await;
                        // Stopping: what is not on the wire yet waits for the next start.
                        let (outcome, note, bounce) = if stop.is_some_and(|s| *s.borrow()) {
                            (Outcome::Released, None, None)
                        } else {
                            deliver(&transport, &metrics, &clock, &row).await
                        };
                        health.saw(&outcome);
                        drop(on_wire);
                        let _ = done.send(Done {
                            row,
                            outcome,
                            note,
                            bounce,
                            _slots: (permit, pending),
                        });
                    }
                    .instrument(span),
                );
            }
        }
        // Let sends under way finish and be recorded.
        let _ = gate.acquire_many(WINDOW as u32).await;
        drop(done_tx);
        let _ = recorder.await;
        renewer.abort();
        handled
    }

    async fn nothing_due(&self) -> bool {
        matches!(
            self.store
                .outbox_due(OutboxKind::MAIL, self.clock.now())
                .await,
            Ok(0)
        )
    }
}

/// Renews the leases of the sends in flight.
async fn renew(store: Store, clock: Clock, in_flight: InFlight) {
    loop {
        tokio::time::sleep(RENEW).await;
        let claims: Vec<(i64, i64)> = in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, a)| (*s, *a))
            .collect();
        if claims.is_empty() {
            continue;
        }
        let until = clock.now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        if let Err(e) = store.renew(&claims, until).await {
            tracing::error!(error = %e, "renewing send leases failed");
        }
    }
}

/// Waits `d` or until stopped; false when stopped.
async fn idle(stop: &mut Option<watch::Receiver<bool>>, d: Duration) -> bool {
    match stop {
        Some(s) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = s.changed() => {}
            }
            !*s.borrow()
        }
        None => {
            tokio::time::sleep(d).await;
            true
        }
    }
}

/// Commits outcomes as they arrive, all that are waiting in one transaction.
/// A commit that fails is retried, until `stop`: then the rows stay
/// `sending` and are sent again, with the same Message-ID, after a restart
/// (or when their lease runs out), as after a crash.
async fn record(
    store: Store,
    clock: Clock,
    mut rx: mpsc::UnboundedReceiver<Done>,
    in_flight: InFlight,
    mut stop: Option<watch::Receiver<bool>>,
) {
    while let Some(first) = rx.recv().await {
        let mut done = vec![first];
        while let Ok(more) = rx.try_recv() {
            done.push(more);
        }
        let outcomes: Vec<Settle> = done
            .iter()
            .map(|d| Settle {
                row: &d.row,
                outcome: d.outcome.clone(),
                note: d.note.clone(),
            })
            .collect();
        // Bounces become events for the core, in the same transaction.
        let bounces: Vec<Event> = done.iter().filter_map(|d| d.bounce.clone()).collect();
        // Until it is recorded, an outcome is not final: retry the commit.
        // (The rows' leases keep other processes off them meanwhile.)
        let mut failures = 0;
        while let Err(e) = store.settle(&outcomes, &bounces, clock.now()).await {
            let cause = e.cause();
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                tracing::error!(error = %e, rows = outcomes.len(), "stopping with send outcomes not recorded ({cause}); they go out again with the same Message-ID after a restart");
                break;
            }
            failures += 1;
            let wait = RECORD.delay(failures);
            // Once per outage, and once when it ends: not at every retry.
            if failures == 1 {
                tracing::error!(error = %e, "recording send outcomes failed; retrying (logged again once recorded): {cause}");
            } else {
                tracing::debug!(error = %e, retry_in = ?wait, "recording send outcomes failed again: {cause}");
            }
            idle(&mut stop, wait).await;
        }
        if failures > 0 {
            tracing::info!(failures, "send outcomes recorded after {failures} failures");
        }
        // Slots free up now.
        let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for d in &done {
            f.remove(&d.row.seq);
        }
        drop(f);
        drop(done);
    }
}

/// What a finished send records: its outcome, its timeline note and, for a
/// hard bounce of a marketing email, the `email_bounced` event.
type Delivered = (Outcome, Option<Note>, Option<Event>);

/// A timeline note about a message.
fn note(kind: TimelineKind, detail: serde_json::Value) -> Option<Note> {
    Some(Note { kind, detail })
}

/// Sends one row's message.
async fn deliver(
    transport: &Transport,
    metrics: &Metrics,
    clock: &Clock,
    row: &OutboxRow,
) -> Delivered {
    let kind = row.kind.as_str();
    let m: Outgoing = match serde_json::from_str(&row.payload) {
        Ok(m) => m,
        Err(e) => {
            metrics
                .emails_failed
                .get_or_create(&MailLabels::of(kind, "", transport.kind()))
                .inc();
            let error = format!("outbox row is not a message: {e}");
            let detail = json!({"error": error});
            return (
                Outcome::Failed { error },
                note(TimelineKind::EmailFailed, detail),
                None,
            );
        }
    };
    let labels = MailLabels::of(kind, &m.what, transport.kind());
    let mut detail = json!({"message_id": m.message_id, "what": m.what});
    // Consent may have been withdrawn, or the lead erased, since the step
    // was decided.
    if m.is_marketing() {
        let reason = match row.consent.as_deref() {
            None => Some("lead erased"),
            Some("opted_out") => Some("lead opted out"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            metrics.emails_cancelled.get_or_create(&labels).inc();
            return (
                Outcome::Cancelled {
                    reason: reason.into(),
                },
                note(TimelineKind::EmailCancelled, detail),
                None,
            );
        }
    }
    if row.uncertain {
        // On the timeline too, so a repeat can be told from a double send.
        detail["uncertain"] = json!(true);
        if transport.already_sent(&m) {
            metrics.mail_sent(&labels, row.created_at, clock.now());
            return (Outcome::Sent, note(TimelineKind::EmailSent, detail), None);
        }
        metrics.emails_resent.get_or_create(&labels).inc();
        tracing::warn!(message_id = %m.message_id, "outcome of an earlier send is unknown (crash); sending again with the same Message-ID");
    }
    match transport.send(&m).await {
        Ok(()) => {
            metrics.mail_sent(&labels, row.created_at, clock.now());
            tracing::debug!(message_id = %m.message_id, what = %m.what, "sent");
            (Outcome::Sent, note(TimelineKind::EmailSent, detail), None)
        }
        Err(e @ (SendError::Transient(_) | SendError::Deferred(_))) => {
            // Unreachable, the transport is down until a send succeeds: said
            // once in the log, on /readyz and by nurture_transport_up. A 4xx
            // for this message is an answer: the server is up.
            let error = e.to_string();
            if let SendError::Transient(_) = e {
                metrics.transport_failed(transport.kind(), &error);
            } else {
                metrics.transport_ok(transport.kind());
            }
            let now = clock.now();
            let Some(at) = MAIL.next_try(row.attempts, row.created_at, now) else {
                metrics.emails_failed.get_or_create(&labels).inc();
                tracing::error!(message_id = %m.message_id, %error, "giving up after 24 hours of retries");
                let detail = json!({"message_id": m.message_id, "what": m.what, "error": error, "gave_up": true});
                return (
                    Outcome::Failed { error },
                    note(TimelineKind::EmailFailed, detail),
                    None,
                );
            };
            metrics.emails_retried.get_or_create(&labels).inc();
            tracing::debug!(message_id = %m.message_id, %error, attempts = row.attempts, "send failed; will retry");
            (Outcome::Retry { at, error }, None, None)
        }
        Err(SendError::Permanent { message, bounce }) => {
            metrics.emails_failed.get_or_create(&labels).inc();
            // A refusal is an answer: the server is up.
            if bounce {
                metrics.transport_ok(transport.kind());
            }
            tracing::warn!(message_id = %m.message_id, error = %message, bounce, "send refused");
            let detail = json!({"message_id": m.message_id, "what": m.what, "error": message, "bounce": bounce});
            let event = (bounce && m.is_marketing()).then(|| Event {
                id: format!("bounce:{}", m.message_id),
                lead: row.lead.clone(),
                kind: crate::eval::BOUNCED.to_string(),
                at: clock.now(),
                properties:
                    json!({"bounce": "hard", "message_id": m.message_id, "reason": message})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                traits: Default::default(),
                imported: None,
            });
            (
                Outcome::Failed { error: message },
                note(TimelineKind::EmailFailed, detail),
                event,
            )
        }
    }
}
