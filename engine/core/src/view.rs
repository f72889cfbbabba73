//! How a lead is shown: the JSON line `simulate` prints per lead (SPEC
//! section 4), and the detail the API answers with. One rendering, so the
//! daemon and `simulate` show a lead the same way.

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
        ledger: &l.history.ledger,
        transitions: &l.history.transitions,
        emails: &l.history.emails,
        assignments: &l.history.assignments,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// A lead as the API shows it: the `simulate` fields, plus what explains
/// them (score and fit breakdowns, enrollments) and the lead's data.
pub fn lead_detail(l: &LeadState) -> serde_json::Value {
    use crate::model::time::format;
    use serde_json::json;
    let mut v: serde_json::Value = serde_json::from_str(&lead_line(l)).unwrap_or_default();
    let breakdown = |items: Vec<(String, i64)>| -> Vec<serde_json::Value> {
        items
            .into_iter()
            .map(|(rule, points)| json!({"rule": rule, "points": points}))
            .collect()
    };
    v["email"] = json!(l.email);
    v["attributes"] = serde_json::Value::Object(l.attributes.clone());
    v["created_at"] = json!(format(&l.created_at));
    v["last_activity_at"] = json!(format(&l.last_activity_at));
    v["score_breakdown"] = json!(breakdown(l.score_breakdown()));
    v["fit_breakdown"] = json!(breakdown(l.fit_breakdown.clone()));
    v["enrollments"] = serde_json::to_value(&l.enrollments).unwrap_or_default();
    // A hard bounce stopped marketing mail to this address.
    v["undeliverable"] = json!(l.undeliverable);
    v
}
