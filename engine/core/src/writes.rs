//! What a decision leaves behind for the shell to store, as types: timeline
//! entries ([`TimelineKind`]), outbox rows ([`OutboxKind`]) and new timers.
//! [`collect`] turns one [`Decision`] into them, purely: emails are composed
//! and webhook bodies fixed here, from the lead as decided, so every retry
//! sends the same bytes.

use crate::eval::{Decision, Effect, Note, Timer};
use crate::mail::Composer;
use crate::model::{time::Timestamp, LeadState};
use crate::rules::Ruleset;
use serde_json::{json, Value};

/// The kinds of a lead's timeline entries, as stored and as the API shows
/// them. The first four are not stored as timeline rows: the daemon composes
/// them, when the timeline is read, from the tables that hold them (events,
/// ledger, transitions, assignments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimelineKind {
    /// An event was applied.
    Event,
    /// Points from a rule (the ledger).
    Scored,
    StageChanged,
    Assigned,
    /// An evaluator note (postponed email, condition error, SLA breach…).
    Note,
    /// A webhook was decided (its delivery is `WebhookFailed` if it fails).
    Webhook,
    /// A drip email was decided and composed.
    Email,
    /// A notice to sales was decided and composed.
    Notification,
    EmailNotComposed,
    EmailSent,
    EmailFailed,
    EmailCancelled,
    WebhookFailed,
    Quarantined,
    Released,
    Erased,
    /// An event came before the lead's history's end, within the allowed
    /// lateness: the lead was re-folded with it in its place.
    Refolded,
    /// An event came before the lead's history's end and could not take
    /// its place (later than the allowed lateness, or see the reason): it
    /// was applied as it arrived.
    Late,
    /// An email, notice or webhook decided for imported history (its time
    /// had passed when it was imported): recorded, not sent.
    Withheld,
}

impl TimelineKind {
    pub const ALL: [TimelineKind; 19] = [
        TimelineKind::Event,
        TimelineKind::Scored,
        TimelineKind::StageChanged,
        TimelineKind::Assigned,
        TimelineKind::Note,
        TimelineKind::Webhook,
        TimelineKind::Email,
        TimelineKind::Notification,
        TimelineKind::EmailNotComposed,
        TimelineKind::EmailSent,
        TimelineKind::EmailFailed,
        TimelineKind::EmailCancelled,
        TimelineKind::WebhookFailed,
        TimelineKind::Quarantined,
        TimelineKind::Released,
        TimelineKind::Erased,
        TimelineKind::Refolded,
        TimelineKind::Late,
        TimelineKind::Withheld,
    ];

    /// The name stored in the `timeline.kind` column and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Event => "event",
            TimelineKind::Scored => "scored",
            TimelineKind::StageChanged => "stage_changed",
            TimelineKind::Assigned => "assigned",
            TimelineKind::Note => "note",
            TimelineKind::Webhook => "webhook",
            TimelineKind::Email => "email",
            TimelineKind::Notification => "notification",
            TimelineKind::EmailNotComposed => "email_not_composed",
            TimelineKind::EmailSent => "email_sent",
            TimelineKind::EmailFailed => "email_failed",
            TimelineKind::EmailCancelled => "email_cancelled",
            TimelineKind::WebhookFailed => "webhook_failed",
            TimelineKind::Quarantined => "quarantined",
            TimelineKind::Released => "released",
            TimelineKind::Erased => "erased",
            TimelineKind::Refolded => "refolded",
            TimelineKind::Late => "late",
            TimelineKind::Withheld => "withheld",
        }
    }

    pub fn parse(s: &str) -> Option<TimelineKind> {
        TimelineKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for TimelineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One timeline entry of `lead`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub lead: String,
    pub at: Timestamp,
    pub kind: TimelineKind,
    pub detail: Value,
}

impl Entry {
    pub fn new(lead: impl Into<String>, at: Timestamp, kind: TimelineKind, detail: Value) -> Entry {
        Entry {
            lead: lead.into(),
            at,
            kind,
            detail,
        }
    }
}

/// What an outbox row carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxKind {
    /// A drip email to the lead.
    Email,
    /// A notice to sales (a new lead, an SLA breach).
    Notification,
    Webhook,
}

impl OutboxKind {
    pub const ALL: [OutboxKind; 3] = [
        OutboxKind::Email,
        OutboxKind::Notification,
        OutboxKind::Webhook,
    ];

    /// The name stored in the `outbox.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Email => "email",
            OutboxKind::Notification => "notification",
            OutboxKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxKind> {
        OutboxKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The mail sender's rows.
    pub const MAIL: &'static [OutboxKind] = &[OutboxKind::Email, OutboxKind::Notification];
    /// The webhook sender's rows.
    pub const WEBHOOKS: &'static [OutboxKind] = &[OutboxKind::Webhook];

    /// A lead's rows of this kind go out one at a time, in order: a row
    /// waits while an earlier one of its lead is pending, retrying or being
    /// sent (webhooks: receivers see a lead's events in order).
    pub fn in_lead_order(self) -> bool {
        matches!(self, OutboxKind::Webhook)
    }

    /// The claim gives the row its `msg_key`, what the receiver de-duplicates
    /// on (a webhook's `webhook-id`); an email's Message-ID is in its payload.
    pub fn keyed_by_claim(self) -> bool {
        matches!(self, OutboxKind::Webhook)
    }
}

impl std::fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row for the outbox, as decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub lead: String,
    pub kind: OutboxKind,
    pub payload: Value,
    /// Imported history: stored as decided (state `withheld`), never sent.
    pub withheld: bool,
}

/// What one decision leaves to store, and what to count.
#[derive(Debug, Default)]
pub struct Collected {
    pub timeline: Vec<Entry>,
    pub outbox: Vec<Queued>,
    /// New timers, in the order decided.
    pub timers: Vec<Timer>,
    /// Condition errors (text compared as a number too) and plugin failures.
    pub rule_errors: u64,
    pub sla_breaches: u64,
    /// Emails whose template failed to render.
    pub not_composed: u64,
    /// Emails, notices and webhooks of imported history, not sent.
    pub withheld: u64,
}

/// Turns a decision made at `at` into what to store (what the lead's
/// history gained is stored with the lead, and the timeline is composed
/// from it when read). Returns the lead as decided.
pub fn collect(
    composer: &Composer,
    rules: &Ruleset,
    decision: Decision,
    at: Timestamp,
    out: &mut Collected,
) -> LeadState {
    let Decision { lead, effects } = decision;
    let id = &lead.id;
    // Imported history: what it decided was due before the import, kept
    // as decided (a re-fold holds steps against it) but never sent.
    let quiet = lead.quiet_until.is_some_and(|q| at <= q);
    let withheld = |kind: TimelineKind, detail: &mut Value| {
        if quiet {
            detail["reason"] = json!("imported history");
            TimelineKind::Withheld
        } else {
            kind
        }
    };
    for e in effects {
        if quiet && !matches!(e, Effect::Schedule(_) | Effect::Note(_)) {
            out.withheld += 1;
        }
        match e {
            Effect::Schedule(t) => out.timers.push(t),
            Effect::Note(note) => {
                if matches!(
                    note,
                    Note::ConditionError { .. }
                        | Note::NotANumber { .. }
                        | Note::PluginFailed { .. }
                ) {
                    out.rule_errors += 1;
                }
                if matches!(note, Note::SlaBreached { .. }) {
                    out.sla_breaches += 1;
                }
                let detail = serde_json::to_value(&note).unwrap_or(Value::Null);
                out.timeline
                    .push(Entry::new(id, at, TimelineKind::Note, detail));
            }
            Effect::Webhook { .. } => {
                let payload = serde_json::to_value(&e).unwrap_or(Value::Null);
                let mut detail = payload.clone();
                let kind = withheld(TimelineKind::Webhook, &mut detail);
                out.timeline.push(Entry::new(id, at, kind, detail));
                // A webhook's body is fixed now, from the lead as decided.
                let payload = crate::webhook::outbox_payload(&e, &lead, at).unwrap_or(payload);
                out.outbox.push(Queued {
                    lead: id.clone(),
                    kind: OutboxKind::Webhook,
                    payload,
                    withheld: quiet,
                });
            }
            mail => {
                let (kind, entry_kind) = match &mail {
                    Effect::SendEmail { .. } => (OutboxKind::Email, TimelineKind::Email),
                    _ => (OutboxKind::Notification, TimelineKind::Notification),
                };
                let mut entry = serde_json::to_value(&mail).unwrap_or(Value::Null);
                match composer.compose(rules, &lead, &mail, at) {
                    Ok(messages) => {
                        let ids: Vec<&str> =
                            messages.iter().map(|m| m.message_id.as_str()).collect();
                        entry["message_ids"] = json!(ids);
                        for m in &messages {
                            out.outbox.push(Queued {
                                lead: id.clone(),
                                kind,
                                payload: serde_json::to_value(m).unwrap_or(Value::Null),
                                withheld: quiet,
                            });
                        }
                        let entry_kind = withheld(entry_kind, &mut entry);
                        out.timeline.push(Entry::new(id, at, entry_kind, entry));
                    }
                    Err(err) => {
                        out.not_composed += 1;
                        entry["error"] = json!(err.to_string());
                        out.timeline.push(Entry::new(
                            id,
                            at,
                            TimelineKind::EmailNotComposed,
                            entry,
                        ));
                    }
                }
            }
        }
    }
    lead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_from_their_names() {
        for k in TimelineKind::ALL {
            assert_eq!(TimelineKind::parse(k.as_str()), Some(k));
        }
        for k in OutboxKind::ALL {
            assert_eq!(OutboxKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TimelineKind::parse("nope"), None);
    }
}
