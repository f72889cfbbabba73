//! The JSON line `simulate` prints per lead (SPEC section 4).

use crate::model::{Assignment, EmailRecord, LeadState, LedgerEntry, Transition};
use serde::Serialize;

#[derive(Serialize)]
struct LeadLine<'a> {
    lead: &'a str,
    stage: &'static str,
    score: i64,
    fit: i64,
    owner: Option<&'a str>,
    consent: &'static str,
    ledger: &'a [LedgerEntry],
    transitions: &'a [Transition],
    emails: &'a [EmailRecord],
    assignments: &'a [Assignment],
}

/// One lead as a `simulate` line.
pub fn lead_line(l: &LeadState) -> String {
    let line = LeadLine {
        lead: &l.id,
        stage: l.stage.as_str(),
        score: l.score,
        fit: l.fit,
        owner: l.owner.as_deref(),
        consent: l.consent.as_str(),
        ledger: &l.ledger,
        transitions: &l.transitions,
        emails: &l.emails,
        assignments: &l.assignments,
    };
    serde_json::to_string(&line).unwrap_or_default()
}
