//! A lead and everything the engine remembers about it.

use super::time::{serde_ts, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Lifecycle stages, in order. `Ord` is the funnel order, so "forward only"
/// is a plain comparison.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Subscriber,
    Lead,
    Mql,
    Sql,
    Opportunity,
    Customer,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Subscriber,
        Stage::Lead,
        Stage::Mql,
        Stage::Sql,
        Stage::Opportunity,
        Stage::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Subscriber => "subscriber",
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sql => "sql",
            Stage::Opportunity => "opportunity",
            Stage::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marketing consent. Only `opted_in` receives drips when consent is required.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    #[default]
    Unknown,
    OptedIn,
    OptedOut,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Unknown => "unknown",
            Consent::OptedIn => "opted_in",
            Consent::OptedOut => "opted_out",
        }
    }

    pub fn parse(s: &str) -> Option<Consent> {
        [Consent::Unknown, Consent::OptedIn, Consent::OptedOut]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// One line of the score ledger: the score is the sum of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Scoring rule, plugin, or `recycle`.
    pub rule: String,
    pub points: i64,
    /// The event that earned it; `None` for scheduled rules and recycles from timers.
    pub event: Option<String>,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
    /// A plugin's explanation; absent for rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Stage,
    pub to: Stage,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
}

/// A marketing email the engine decided to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRecord {
    pub campaign: String,
    /// 1-based step number, as marketers count.
    pub step: usize,
    pub template: String,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub owner: String,
    pub rule: String,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
}

/// Sales' answer as applied, with the owner who held the lead then (reports
/// credit owners from these; the lead's owner may have changed since).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub owner: Option<String>,
    pub status: super::FeedbackStatus,
    #[serde(with = "serde_ts")]
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    Active,
    Exited,
    Completed,
}

/// A lead's membership of one campaign. A lead enrolls in a campaign once per
/// cycle; a recycle by sales starts a new cycle, so it can be nurtured again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub campaign: String,
    pub cycle: u32,
    #[serde(with = "serde_ts")]
    pub enrolled_at: Timestamp,
    pub status: EnrollmentStatus,
    /// Index (0-based) of the next step to send.
    pub next_step: usize,
    /// When that step is due; `None` once the enrollment ended.
    pub due_at: Option<Timestamp>,
    /// The due step waits for consent; it goes out on the event that grants it.
    #[serde(default)]
    pub waiting_consent: bool,
}

/// Everything known about one lead. This is the state the evaluator takes and
/// returns; shells store it however they like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    pub id: String,
    pub email: String,
    pub attributes: Map<String, Value>,
    pub score: i64,
    pub fit: i64,
    /// Fit rules that hold now, with their points: the fit explanation.
    pub fit_breakdown: Vec<(String, i64)>,
    pub stage: Stage,
    pub owner: Option<String>,
    pub consent: Consent,
    #[serde(with = "serde_ts")]
    pub created_at: Timestamp,
    #[serde(with = "serde_ts")]
    pub last_activity_at: Timestamp,
    pub ledger: Vec<LedgerEntry>,
    pub transitions: Vec<Transition>,
    pub emails: Vec<EmailRecord>,
    pub assignments: Vec<Assignment>,
    /// Sales feedback applied, oldest first.
    #[serde(default)]
    pub feedback: Vec<FeedbackRecord>,
    pub enrollments: Vec<Enrollment>,
    /// Incremented by every recycle; campaigns enroll once per cycle.
    pub cycle: u32,
    /// The routing rule that placed the lead with its owner or in a claim pool.
    pub routing_rule: Option<String>,
    /// Owners the lead is offered to (strategy `claim`), until one claims it.
    pub offered_to: Vec<String>,
    /// Since when it is offered to them (the pool shows it).
    #[serde(default)]
    pub offered_at: Option<Timestamp>,
    /// When the current owner's time to give feedback runs out.
    pub sla_due: Option<Timestamp>,
    /// The address hard-bounced (an `email_bounced` event): no more marketing
    /// mail until the email changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undeliverable: bool,
    /// Results of conditions that read only this lead, kept while what they
    /// read is unchanged. Not stored: a lead read back starts with it empty.
    #[serde(skip)]
    pub cache: super::ConditionCache,
}

impl LeadState {
    pub fn new(id: &str, at: Timestamp) -> LeadState {
        LeadState {
            id: id.to_string(),
            email: String::new(),
            attributes: Map::new(),
            score: 0,
            fit: 0,
            fit_breakdown: Vec::new(),
            stage: Stage::Subscriber,
            owner: None,
            consent: Consent::Unknown,
            created_at: at,
            last_activity_at: at,
            ledger: Vec::new(),
            transitions: Vec::new(),
            emails: Vec::new(),
            assignments: Vec::new(),
            feedback: Vec::new(),
            enrollments: Vec::new(),
            cycle: 0,
            routing_rule: None,
            offered_to: Vec::new(),
            offered_at: None,
            sla_due: None,
            undeliverable: false,
            cache: Default::default(),
        }
    }

    /// Score per rule, largest contribution first: the score explanation.
    pub fn score_breakdown(&self) -> Vec<(String, i64)> {
        let mut by_rule: Vec<(String, i64)> = Vec::new();
        for e in &self.ledger {
            match by_rule.iter_mut().find(|(r, _)| *r == e.rule) {
                Some((_, p)) => *p = p.saturating_add(e.points),
                None => by_rule.push((e.rule.clone(), e.points)),
            }
        }
        by_rule
    }

    pub fn active_enrollment(&self, campaign: &str) -> Option<&Enrollment> {
        self.enrollments
            .iter()
            .find(|e| e.campaign == campaign && e.status == EnrollmentStatus::Active)
    }
}
