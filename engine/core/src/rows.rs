//! What a lead becomes in the database: its `leads` row and the ledger,
//! transition and enrollment rows it gained, as plain cells the store binds;
//! the last guard that they can be stored and read back; and the one way
//! back from the `state` column. Pure, so the fuzz target checks exactly
//! what the processor writes.

use crate::model::time::millis;
use crate::model::LeadState;

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
    serde_json::from_str(text).map_err(|e| format!("stored state unreadable: {e}"))
}

/// What one changed lead becomes in the database: its `leads` row and the
/// ledger, transition and enrollment rows it gained since `before`.
pub struct LeadRows {
    /// The deepest nesting of an attribute value (a scalar is 0).
    deepest: usize,
    /// The `leads` row, in [`LEAD_COLUMNS`]' order.
    pub lead: Vec<Cell>,
    pub ledger: Vec<Vec<Cell>>,
    pub transitions: Vec<Vec<Cell>>,
    pub enrollments: Vec<Vec<Cell>>,
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
        let from = before.map_or(0, |b| b.ledger.len());
        let ledger = lead
            .ledger
            .iter()
            .enumerate()
            .skip(from)
            .map(|(n, e)| {
                vec![
                    Cell::Text(lead.id.clone()),
                    Cell::Int(n as i64),
                    Cell::Text(e.rule.clone()),
                    Cell::Int(e.points),
                    Cell::OptText(e.event.clone()),
                    Cell::Int(millis(&e.at)),
                    Cell::OptText(e.reason.clone()),
                ]
            })
            .collect();
        let from = before.map_or(0, |b| b.transitions.len());
        let transitions = lead
            .transitions
            .iter()
            .enumerate()
            .skip(from)
            .map(|(n, t)| {
                vec![
                    Cell::Text(lead.id.clone()),
                    Cell::Int(n as i64),
                    Cell::Text(t.from.as_str().into()),
                    Cell::Text(t.to.as_str().into()),
                    Cell::Int(millis(&t.at)),
                ]
            })
            .collect();
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
            ledger,
            transitions,
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
        for r in &self.ledger {
            out.extend(named(&LEDGER_COLUMNS, r));
        }
        for r in &self.transitions {
            out.extend(named(&TRANSITION_COLUMNS, r));
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
        lead.ledger.push(crate::model::LedgerEntry {
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
