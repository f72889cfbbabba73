//! Report arithmetic, pure: what the per-owner report says, given the leads
//! and the evaluator's notes. The store only reads the rows and feeds them in.

use crate::model::{FeedbackStatus, LeadState, Stage};
use serde::Serialize;
use std::collections::BTreeMap;

/// One owner's figures in the funnel report.
#[derive(Debug, Default, Serialize)]
pub struct OwnerFigures {
    pub owner: String,
    /// Assignments to this owner, reassignments and re-routes included.
    pub assigned: i64,
    /// Leads assigned to this owner still in `sql` (no feedback yet).
    pub open: i64,
    pub accepted: i64,
    pub won: i64,
    pub rejected: i64,
    pub lost: i64,
    /// Median seconds from an assignment to this owner's first feedback on it.
    pub median_seconds_to_feedback: Option<i64>,
    pub sla_breaches: i64,
}

/// The per-owner report, built lead by lead.
#[derive(Debug, Default)]
pub struct OwnerReport {
    by: BTreeMap<String, OwnerFigures>,
    /// Seconds from an assignment to its owner's first feedback, per owner.
    waits: BTreeMap<String, Vec<i64>>,
}

impl OwnerReport {
    /// Counts one lead's assignments and feedback.
    pub fn lead(&mut self, lead: &LeadState) {
        for a in &lead.history.assignments {
            self.figures(&a.owner).assigned += 1;
        }
        if lead.stage == Stage::Sql {
            if let Some(o) = &lead.owner {
                self.figures(o).open += 1;
            }
        }
        let mut answered = vec![false; lead.history.assignments.len()];
        for fb in &lead.history.feedback {
            let Some(o) = &fb.owner else { continue };
            let f = self.figures(o);
            match fb.status {
                FeedbackStatus::Accepted => f.accepted += 1,
                FeedbackStatus::Won => f.won += 1,
                FeedbackStatus::Rejected => f.rejected += 1,
                FeedbackStatus::Lost => f.lost += 1,
            }
            // The assignment this answers: the owner's latest before it.
            if let Some(i) = lead
                .history
                .assignments
                .iter()
                .rposition(|a| &a.owner == o && a.at <= fb.at)
            {
                if !answered[i] {
                    answered[i] = true;
                    let secs = (fb.at - lead.history.assignments[i].at).num_seconds();
                    self.waits.entry(o.clone()).or_default().push(secs);
                }
            }
        }
    }

    /// Counts an evaluator note (as stored on the timeline): SLA breaches.
    pub fn note(&mut self, note: &serde_json::Value) {
        if note.get("note").and_then(|n| n.as_str()) != Some("sla_breached") {
            return;
        }
        if let Some(o) = note.get("owner").and_then(|o| o.as_str()) {
            self.figures(o).sla_breaches += 1;
        }
    }

    /// The figures, by owner id.
    pub fn finish(mut self) -> Vec<OwnerFigures> {
        for (o, mut w) in std::mem::take(&mut self.waits) {
            w.sort_unstable();
            if let Some(f) = self.by.get_mut(&o) {
                f.median_seconds_to_feedback = w.get(w.len() / 2).copied();
            }
        }
        self.by.into_values().collect()
    }

    fn figures(&mut self, owner: &str) -> &mut OwnerFigures {
        self.by
            .entry(owner.to_string())
            .or_insert_with(|| OwnerFigures {
                owner: owner.to_string(),
                ..Default::default()
            })
    }
}
