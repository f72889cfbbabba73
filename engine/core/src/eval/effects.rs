//! Decisions as values: what the shell must carry out, and what the lead's
//! timeline should say.

use crate::model::time::{serde_ts, Timestamp};
use crate::model::Stage;
use crate::rules::config::WebhookEvent;
use serde::{Deserialize, Serialize};

/// Work due later for one lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub lead: String,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
    pub kind: TimerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimerKind {
    /// Step `step` (0-based) of a campaign enrollment.
    Drip {
        campaign: String,
        cycle: u32,
        step: usize,
    },
    /// The owner's time to give feedback runs out.
    Sla { owner: String },
    /// The offer of `claim` rule `rule` expires (its `claim_within`).
    Claim { rule: String },
}

/// Something the shell must do, or record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Send drip step `step` (1-based) of `campaign` with `template`.
    SendEmail {
        campaign: String,
        /// The enrollment's cycle, which its Message-ID names: a lead
        /// recycled while enrolled finishes the old enrollment, and may
        /// then enroll again in the new cycle (not in outputs: the step's
        /// place is what `simulate` and the timeline show).
        #[serde(skip)]
        cycle: u32,
        step: usize,
        template: String,
    },
    /// Tell an owner a lead was assigned to them.
    NotifyOwner {
        owner: String,
        email: String,
        rule: String,
    },
    /// Offer the lead to owners (strategy `claim`).
    OfferToOwners { owners: Vec<String>, rule: String },
    /// Tell `to` that `owner` let the SLA pass.
    NotifySlaBreach { to: String, owner: String },
    /// Fire a webhook.
    Webhook {
        webhook: String,
        event: WebhookEvent,
        detail: WebhookDetail,
    },
    /// Wake up later.
    Schedule(Timer),
    /// Record on the lead's timeline.
    Note(Note),
}

/// What a webhook says beyond the lead as the decision left it: the parts
/// of the change that the lead's state no longer shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookDetail {
    /// `lead.stage_changed`: the stage left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Stage>,
    /// `lead.stage_changed`: the stage entered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Stage>,
    /// `lead.assigned`: the new owner; `lead.sla_breached`: the owner who
    /// let the SLA pass (the lead may have a new owner already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `lead.assigned`: the routing rule that chose the owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `lead.recycled`: sales' reason, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a due step waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Postponed {
    Consent,
    FrequencyCap,
    Window,
}

/// Timeline entries: everything worth explaining that is not already in the
/// ledger, transitions, emails or assignments.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    ConditionError {
        rule: String,
        message: String,
    },
    /// The condition of `rule` compares `field` (`lead.attributes.employees`)
    /// with a number, but the lead or event has text there (`value`, at most
    /// 100 characters): it did not hold. Instead of a condition error, at
    /// most once per rule and field per decision.
    NotANumber {
        rule: String,
        field: String,
        value: String,
    },
    /// A scoring rule whose condition held earned nothing: its limit was
    /// used up (only when explaining, see `Evaluator::explain`).
    LimitReached {
        rule: String,
        times: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        per: Option<String>,
    },
    PluginFailed {
        plugin: String,
        error: String,
    },
    Enrolled {
        campaign: String,
    },
    Exited {
        campaign: String,
        reason: String,
    },
    Completed {
        campaign: String,
    },
    StepSkipped {
        campaign: String,
        step: usize,
    },
    StepPostponed {
        campaign: String,
        step: usize,
        reason: Postponed,
        #[serde(skip_serializing_if = "Option::is_none", with = "opt_ts")]
        until: Option<Timestamp>,
    },
    Unrouted {
        reason: String,
    },
    /// Routing rule `rule` held but every owner of it was at capacity: the
    /// next rule whose `if` holds was tried.
    RuleFull {
        rule: String,
    },
    /// Nobody claimed the offer of `rule` within its `claim_within`: the lead
    /// went to the fallback owner `to`, or (none) on to the next rule.
    ClaimExpired {
        rule: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// A fallback owner (a rule's or the SLA's) was at capacity, so not used.
    FallbackFull {
        owner: String,
    },
    /// After `breaches` SLA breaches (past `routing.sla.max_reassign`) the
    /// clock stopped for good: the lead went from `owner` to the fallback
    /// owner `to`, or (none) stays with `owner`. No more breaches follow.
    SlaStopped {
        owner: String,
        breaches: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    Offered {
        rule: String,
        owners: Vec<String>,
    },
    ClaimRefused {
        owner: String,
        reason: String,
    },
    SlaBreached {
        owner: String,
    },
    FeedbackIgnored {
        reason: String,
    },
    Recycled {
        reason: Option<String>,
    },
}

/// A plugin's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PluginEffect {
    Points {
        points: i64,
        reason: String,
    },
    SetAttribute {
        key: String,
        value: serde_json::Value,
    },
    Tag {
        tag: String,
    },
}

impl PluginEffect {
    /// The effect's kind as the WIT world names it.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginEffect::Points { .. } => "points",
            PluginEffect::SetAttribute { .. } => "set-attribute",
            PluginEffect::Tag { .. } => "tag",
        }
    }
}

mod opt_ts {
    use crate::model::time::{format, Timestamp};
    use serde::Serializer;
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }
}
