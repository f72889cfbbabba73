//! What a lead becomes in the database: its `leads` row and the ledger,
//! transition and enrollment rows it gained, as plain cells the store binds;
//! the last guard that they can be stored and read back; and the one way
//! back from the `state` column. Pure, so the fuzz target checks exactly
//! what the processor writes.

use crate::model::time::millis;
use crate::model::{
    Assignment, EmailRecord, FeedbackRecord, History, LeadState, LedgerEntry, Memory, Transition,
};

/// A value of one column.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl Cell {
    /// The text a cell holds, if it is text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            Cell::OptText(s) => s.as_deref(),
            _ => None,
        }
    }
}

/// A lead whose rows the database could not hold or give back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("lead {lead:?} cannot be stored: {detail}")]
pub struct Unstorable {
    pub lead: String,
    pub detail: String,
}

/// Reads a lead's stored state: the one way back from the `state` column.
pub fn parse_state(text: &str) -> Result<LeadState, String> {
    parse_stored(text).map(|(lead, _)| lead)
}

/// Reads a lead's stored state, and the history it still holds if it was
/// stored before version 2 (which kept the whole history in the state):
/// such a lead reads back with its memory rebuilt from that history, and
/// `Store::migrate` moves the history into its tables.
pub fn parse_stored(text: &str) -> Result<(LeadState, Option<History>), String> {
    let unreadable = |e: serde_json::Error| format!("stored state unreadable: {e}");
    let mut lead: LeadState = serde_json::from_str(text).map_err(unreadable)?;
    // A cheap test first: only a state with an array under a "ledger" key
    // (its own, or one in its attributes) can be an old one.
    if !text.contains("\"ledger\":[") {
        return Ok((lead, None));
    }
    let old: Legacy = serde_json::from_str(text).map_err(unreadable)?;
    if old.memory.is_some() {
        return Ok((lead, None));
    }
    let history = History {
        ledger: old.ledger,
        transitions: old.transitions,
        emails: old.emails,
        assignments: old.assignments,
        feedback: old.feedback,
    };
    lead.memory = Memory::of_history(&history);
    Ok((lead, Some(history)))
}

/// The history fields of a state stored before version 2.
#[derive(serde::Deserialize)]
struct Legacy {
    #[serde(default)]
    ledger: Vec<LedgerEntry>,
    #[serde(default)]
    transitions: Vec<Transition>,
    #[serde(default)]
    emails: Vec<EmailRecord>,
    #[serde(default)]
    assignments: Vec<Assignment>,
    #[serde(default)]
    feedback: Vec<FeedbackRecord>,
    /// Present in every state stored since: then this is not an old one.
    #[serde(default)]
    memory: Option<serde::de::IgnoredAny>,
}

/// What one changed lead becomes in the database: its `leads` row and the
/// ledger, transition and enrollment rows it gained since `before`.
pub struct LeadRows {
    /// The deepest nesting of an attribute value (a scalar is 0).
    deepest: usize,
    /// The `leads` row, in [`LEAD_COLUMNS`]' order.
    pub lead: Vec<Cell>,
    pub history: HistoryRows,
    pub enrollments: Vec<Vec<Cell>>,
}

/// A lead's new history rows, one list per table, each row in its table's
/// column order ([`HistoryRows::TABLES`]).
#[derive(Default)]
pub struct HistoryRows {
    pub ledger: Vec<Vec<Cell>>,
    pub transitions: Vec<Vec<Cell>>,
    pub emails: Vec<Vec<Cell>>,
    pub assignments: Vec<Vec<Cell>>,
    pub feedback: Vec<Vec<Cell>>,
}

impl HistoryRows {
    /// Each table with its columns, in the order [`HistoryRows::lists`] gives.
    pub const TABLES: [(&'static str, &'static [&'static str]); 5] = [
        ("ledger", &LEDGER_COLUMNS),
        ("transitions", &TRANSITION_COLUMNS),
        ("emails", &EMAIL_COLUMNS),
        ("assignments", &ASSIGNMENT_COLUMNS),
        ("feedback", &FEEDBACK_COLUMNS),
    ];

    pub fn lists(&self) -> [&Vec<Vec<Cell>>; 5] {
        [
            &self.ledger,
            &self.transitions,
            &self.emails,
            &self.assignments,
            &self.feedback,
        ]
    }

    /// Appends `other`'s rows (one statement per table for many leads).
    pub fn extend(&mut self, other: HistoryRows) {
        let HistoryRows {
            ledger,
            transitions,
            emails,
            assignments,
            feedback,
        } = other;
        self.ledger.extend(ledger);
        self.transitions.extend(transitions);
        self.emails.extend(emails);
        self.assignments.extend(assignments);
        self.feedback.extend(feedback);
    }

    /// The rows of a history read back whole (the upgrade of a state that
    /// still held it): numbered from 0.
    pub fn of(id: &str, h: &crate::model::History) -> HistoryRows {
        let mut lead = LeadState::new(id, chrono::DateTime::UNIX_EPOCH);
        lead.history = h.clone();
        let c = &mut lead.memory.counts;
        c.ledger = h.ledger.len() as u64;
        c.transitions = h.transitions.len() as u64;
        c.emails = h.emails.len() as u64;
        c.assignments = h.assignments.len() as u64;
        c.feedback = h.feedback.len() as u64;
        LeadRows::new(None, &lead, 0)
            .map(|r| r.history)
            .unwrap_or_default()
    }
}

/// Rows for the entries of `now` past those in `was`, numbered so that the
/// last is `count - 1`.
fn added<T>(
    now: &[T],
    was: Option<&Vec<T>>,
    count: u64,
    row: impl Fn(i64, &T) -> Vec<Cell>,
) -> Vec<Vec<Cell>> {
    let skip = was.map_or(0, |w| w.len()).min(now.len());
    let first = count as i64 - now.len() as i64;
    now.iter()
        .enumerate()
        .skip(skip)
        .map(|(i, e)| row(first + i as i64, e))
        .collect()
}

pub const LEAD_COLUMNS: [&str; 10] = [
    "leads.id",
    "leads.email",
    "leads.stage",
    "leads.owner",
    "leads.score",
    "leads.fit",
    "leads.consent",
    "leads.created_at",
    "leads.updated_at",
    "leads.state",
];
const LEDGER_COLUMNS: [&str; 7] = [
    "ledger.lead",
    "ledger.n",
    "ledger.rule",
    "ledger.points",
    "ledger.event",
    "ledger.at",
    "ledger.reason",
];
const TRANSITION_COLUMNS: [&str; 5] = [
    "transitions.lead",
    "transitions.n",
    "transitions.from_stage",
    "transitions.to_stage",
    "transitions.at",
];
const EMAIL_COLUMNS: [&str; 6] = [
    "emails.lead",
    "emails.n",
    "emails.campaign",
    "emails.step",
    "emails.template",
    "emails.at",
];
const ASSIGNMENT_COLUMNS: [&str; 5] = [
    "assignments.lead",
    "assignments.n",
    "assignments.owner",
    "assignments.rule",
    "assignments.at",
];
const FEEDBACK_COLUMNS: [&str; 5] = [
    "feedback.lead",
    "feedback.n",
    "feedback.owner",
    "feedback.status",
    "feedback.at",
];
const ENROLLMENT_COLUMNS: [&str; 6] = [
    "enrollments.lead",
    "enrollments.campaign",
    "enrollments.cycle",
    "enrollments.status",
    "enrollments.next_step",
    "enrollments.due_at",
];

impl LeadRows {
    pub fn new(
        before: Option<&LeadState>,
        lead: &LeadState,
        now_ms: i64,
    ) -> Result<LeadRows, Unstorable> {
        let state = serde_json::to_string(lead).map_err(|e| Unstorable {
            lead: lead.id.clone(),
            detail: format!("state cannot be written: {e}"),
        })?;
        let row = vec![
            Cell::Text(lead.id.clone()),
            Cell::Text(lead.email.clone()),
            Cell::Text(lead.stage.as_str().into()),
            Cell::OptText(lead.owner.clone()),
            Cell::Int(lead.score),
            Cell::Int(lead.fit),
            Cell::Text(lead.consent.as_str().into()),
            Cell::Int(millis(&lead.created_at)),
            Cell::Int(now_ms),
            Cell::Text(state),
        ];
        // New history entries, numbered on from what the lead had before
        // (its memory counts every entry ever; its history holds the latest).
        let h = &lead.history;
        let was = before.map(|b| &b.history);
        let counts = &lead.memory.counts;
        let id = || Cell::Text(lead.id.clone());
        let ledger = added(&h.ledger, was.map(|w| &w.ledger), counts.ledger, |n, e| {
            vec![
                id(),
                Cell::Int(n),
                Cell::Text(e.rule.clone()),
                Cell::Int(e.points),
                Cell::OptText(e.event.clone()),
                Cell::Int(millis(&e.at)),
                Cell::OptText(e.reason.clone()),
            ]
        });
        let transitions = added(
            &h.transitions,
            was.map(|w| &w.transitions),
            counts.transitions,
            |n, t| {
                vec![
                    id(),
                    Cell::Int(n),
                    Cell::Text(t.from.as_str().into()),
                    Cell::Text(t.to.as_str().into()),
                    Cell::Int(millis(&t.at)),
                ]
            },
        );
        let emails = added(&h.emails, was.map(|w| &w.emails), counts.emails, |n, e| {
            vec![
                id(),
                Cell::Int(n),
                Cell::Text(e.campaign.clone()),
                Cell::Int(e.step as i64),
                Cell::Text(e.template.clone()),
                Cell::Int(millis(&e.at)),
            ]
        });
        let assignments = added(
            &h.assignments,
            was.map(|w| &w.assignments),
            counts.assignments,
            |n, a| {
                vec![
                    id(),
                    Cell::Int(n),
                    Cell::Text(a.owner.clone()),
                    Cell::Text(a.rule.clone()),
                    Cell::Int(millis(&a.at)),
                ]
            },
        );
        let feedback = added(
            &h.feedback,
            was.map(|w| &w.feedback),
            counts.feedback,
            |n, f| {
                vec![
                    id(),
                    Cell::Int(n),
                    Cell::OptText(f.owner.clone()),
                    Cell::Text(f.status.as_str().into()),
                    Cell::Int(millis(&f.at)),
                ]
            },
        );
        let enrollments = lead
            .enrollments
            .iter()
            .filter(|e| !before.is_some_and(|b| b.enrollments.contains(e)))
            .map(|e| {
                let status = serde_json::to_value(e.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                vec![
                    Cell::Text(lead.id.clone()),
                    Cell::Text(e.campaign.clone()),
                    Cell::Int(e.cycle as i64),
                    Cell::Text(status),
                    Cell::Int(e.next_step as i64),
                    Cell::OptInt(e.due_at.as_ref().map(millis)),
                ]
            })
            .collect();
        Ok(LeadRows {
            deepest: lead.attributes.values().map(depth).max().unwrap_or(0),
            lead: row,
            history: HistoryRows {
                ledger,
                transitions,
                emails,
                assignments,
                feedback,
            },
            enrollments,
        })
    }

    /// Every text value these rows store, with its `table.column`.
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        fn named<'a>(
            cols: &'static [&'static str],
            row: &'a [Cell],
        ) -> Vec<(&'static str, &'a str)> {
            cols.iter()
                .zip(row.iter())
                .filter_map(|(c, a)| a.text().map(|t| (*c, t)))
                .collect()
        }
        let mut out = named(&LEAD_COLUMNS, &self.lead);
        for ((_, cols), rows) in HistoryRows::TABLES.iter().zip(self.history.lists()) {
            for r in rows {
                out.extend(named(cols, r));
            }
        }
        for r in &self.enrollments {
            out.extend(named(&ENROLLMENT_COLUMNS, r));
        }
        out.into_iter()
    }

    /// The stored state, as the `state` column holds it.
    pub fn state(&self) -> &str {
        self.lead[9].text().unwrap_or_default()
    }

    /// Whether the database can hold these rows and give them back: no
    /// NUL in any text column (PostgreSQL's `text` refuses it) and a state
    /// that reads back (serde_json reads at most [`READ_DEPTH`] levels; the
    /// state nests attributes [`STATE_DEPTH`] deep). The evaluator bounds
    /// what plugins and events bring (model::bounds); this is the last
    /// guard, so that a lead whose data slipped past is set aside before
    /// anything unreadable is stored. It costs a walk of the attributes, not
    /// a parse of the state (a parse cost ~5 % of processing throughput).
    pub fn check(&self) -> Result<(), Unstorable> {
        let id = self.lead[0].text().unwrap_or_default();
        let unstorable = |detail: String| Unstorable {
            lead: id.to_string(),
            detail,
        };
        if let Some((column, _)) = self.texts().find(|(_, t)| t.contains('\0')) {
            return Err(unstorable(format!(
                "{column} contains a NUL character (\\u0000)"
            )));
        }
        if self.deepest + STATE_DEPTH > READ_DEPTH {
            return Err(unstorable(format!(
                "its state could not be read back: an attribute nested {} levels deep (at most {})",
                self.deepest,
                READ_DEPTH - STATE_DEPTH
            )));
        }
        Ok(())
    }
}

/// The most levels of nesting serde_json reads back (below its recursion
/// limit of 128; the test below finds the edge).
const READ_DEPTH: usize = 127;
/// The levels a stored state puts around an attribute value (the state, its
/// `attributes`).
const STATE_DEPTH: usize = 2;

/// How deeply a value nests: a scalar 0, `[1]` 1.
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_that_could_not_be_stored_or_read_back_are_refused() {
        let at = crate::model::time::parse("2026-01-01T00:00:00Z").unwrap();
        let lead = LeadState::new("u1", at);
        let ok = LeadRows::new(None, &lead, 0).unwrap();
        assert!(ok.check().is_ok());
        assert_eq!(parse_state(ok.state()).unwrap(), lead);

        // Deeper than serde_json reads back, though it writes it: the guard
        // refuses exactly the states that do not read back.
        for n in 100..=130 {
            let mut deep = lead.clone();
            let value = (0..n).fold(json!(1), |v, _| json!([v]));
            deep.attributes.insert("deep".into(), value);
            let rows = LeadRows::new(None, &deep, 0).unwrap();
            let reads_back = parse_state(rows.state()).is_ok();
            assert_eq!(rows.check().is_ok(), reads_back, "nested {n} deep");
            if n == 127 {
                let err = rows.check().unwrap_err();
                assert!(err.to_string().contains("could not be read back"), "{err}");
            }
        }

        let mut lead = LeadState::new("u1", at);
        lead.record_points(crate::model::LedgerEntry {
            rule: "p".into(),
            points: 1,
            event: None,
            at,
            reason: Some("a\u{0}b".into()),
        });
        let err = LeadRows::new(None, &lead, 0).unwrap().check().unwrap_err();
        assert!(err.to_string().contains("ledger.reason"), "{err}");
    }
}
