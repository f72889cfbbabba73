//! Stages: forward-only promotion by rules (step 5), and sales' answers:
//! feedback, claims and recycling (SPEC section 1).

use super::{Note, Run, WebhookDetail};
use crate::cel as cond;
use crate::model::{Event, FeedbackStatus, Stage, Transition};
use crate::rules::config::WebhookEvent;

impl Run<'_, '_> {
    /// Moves the lead to the highest stage whose condition holds, if that is
    /// ahead of where it is: one transition, even when skipping stages.
    /// Returns the stage entered.
    pub(super) fn evaluate_stage(&mut self) -> Option<Stage> {
        let rules = self.rules;
        for (stage, cond) in &rules.stages {
            if *stage <= self.lead.stage {
                break;
            }
            if self.holds(cond) {
                self.move_to(*stage);
                return Some(*stage);
            }
        }
        None
    }

    pub(super) fn move_to(&mut self, to: Stage) {
        let from = self.lead.stage;
        if from == to {
            return;
        }
        self.lead.record_transition(Transition {
            from,
            to,
            at: self.now,
        });
        self.lead.stage = to;
        self.touched(cond::fields::STAGE);
        self.webhook(
            WebhookEvent::StageChanged,
            WebhookDetail {
                from: Some(from),
                to: Some(to),
                ..Default::default()
            },
        );
    }

    /// `sales_feedback` and `sales_claim` events.
    pub(super) fn sales_input(&mut self, ev: &Event) {
        if let Some(status) = ev.feedback() {
            let reason = ev
                .properties
                .get("reason")
                .and_then(|r| r.as_str())
                .map(str::to_string);
            self.feedback(status, reason);
        } else if let Some(owner) = ev.claimant() {
            self.claim(owner);
        }
    }

    fn feedback(&mut self, status: FeedbackStatus, reason: Option<String>) {
        // Any answer stops the SLA clock.
        self.lead.sla_due = None;
        self.lead.record_feedback(crate::model::FeedbackRecord {
            owner: self.lead.owner.clone(),
            status,
            at: self.now,
        });
        match status {
            FeedbackStatus::Accepted => {
                if self.lead.stage < Stage::Opportunity {
                    self.move_to(Stage::Opportunity);
                } else {
                    self.note(Note::FeedbackIgnored {
                        reason: format!("already {}", self.lead.stage),
                    });
                }
            }
            FeedbackStatus::Won => {
                self.close_owner();
                if self.lead.stage < Stage::Customer {
                    self.move_to(Stage::Customer);
                }
            }
            FeedbackStatus::Rejected | FeedbackStatus::Lost => self.recycle(reason),
        }
    }

    /// Back to `lead`, no owner, score reset to `routing.recycle_score`, and a
    /// new cycle so nurture campaigns can enroll the lead again.
    fn recycle(&mut self, reason: Option<String>) {
        self.close_owner();
        self.lead.owner = None;
        self.lead.routing_rule = None;
        self.lead.offered_to.clear();
        self.lead.offered_at = None;
        // Bounded routing memory belongs to the routing it counted.
        self.lead.sla_breaches = 0;
        self.lead.claim_due = None;
        let reset = self.rules.recycle_score.saturating_sub(self.lead.score);
        self.add_points("recycle", reset, None, reason.clone());
        // The feedback event caused it; keep it for the explanation.
        let cause = self.current_event.clone();
        if let Some(entry) = self.lead.history.ledger.last_mut() {
            entry.event = cause;
        }
        self.lead.cycle += 1;
        let from = self.lead.stage;
        self.lead.stage_back_to(Stage::Lead, self.now);
        self.touched(cond::fields::ALL);
        if from != Stage::Lead {
            self.webhook(
                WebhookEvent::StageChanged,
                WebhookDetail {
                    from: Some(from),
                    to: Some(Stage::Lead),
                    ..Default::default()
                },
            );
        }
        self.note(Note::Recycled {
            reason: reason.clone(),
        });
        self.webhook(
            WebhookEvent::Recycled,
            WebhookDetail {
                reason,
                ..Default::default()
            },
        );
    }

    /// The owner no longer holds this lead open.
    fn close_owner(&mut self) {
        if let Some(owner) = &self.lead.owner {
            if self.lead.stage < Stage::Customer {
                self.book.release(owner);
            }
        }
    }
}

impl crate::model::LeadState {
    /// The only backward move: sales recycling a lead.
    fn stage_back_to(&mut self, to: Stage, at: crate::model::time::Timestamp) {
        if self.stage != to {
            self.record_transition(Transition {
                from: self.stage,
                to,
                at,
            });
            self.stage = to;
        }
    }
}
