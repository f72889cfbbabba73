//! A lead and everything the engine remembers about it.

use super::time::{millis, serde_ts, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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
    /// Steps (0-based) already sent before a late event re-ordered the
    /// lead's history ([`crate::sim::refold`]): when one comes due it counts
    /// as sent and is not sent again. Never more than the campaign's steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_ahead: Vec<usize>,
}

/// What happened to a lead, oldest first, append-only: the score ledger,
/// stage changes, emails decided, assignments and sales feedback. The
/// evaluator adds to it and never reads it to decide (what it needs is in
/// [`Memory`], bounded), so a holder keeps as much of it as it likes:
/// `simulate` all of it, the daemon only what one step added (appended to
/// its tables), the API what it reads back from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ledger: Vec<LedgerEntry>,
    pub transitions: Vec<Transition>,
    pub emails: Vec<EmailRecord>,
    pub assignments: Vec<Assignment>,
    /// Sales feedback applied.
    pub feedback: Vec<FeedbackRecord>,
}

/// How many entries each part of a lead's [`History`] has had, ever: the
/// daemon numbers its history rows with these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ledger: u64,
    pub transitions: u64,
    pub emails: u64,
    pub assignments: u64,
    pub feedback: u64,
}

/// What the evaluator remembers of a lead's history in order to decide,
/// bounded by the rules rather than by how long the lead has lived, so the
/// stored state does not grow with history (docs/daemon.md, "Lead state").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub counts: Counts,
    /// Points per rule (plugins and recycles too), in the order each first
    /// scored: the score explanation. One entry per rule.
    pub points: Vec<(String, i64)>,
    /// Per scoring rule with a `limit`: when it last scored (epoch ms,
    /// oldest first), at most the limit's `times` of them: no more can
    /// decide whether it may score again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hits: BTreeMap<String, Vec<i64>>,
    /// When the last marketing emails were decided (epoch ms, oldest
    /// first), at most the frequency cap's `max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<i64>,
}

impl Memory {
    /// Rule `rule`, limited to `times`, scored at `at`.
    pub fn hit(&mut self, rule: &str, at: &Timestamp, times: u32) {
        let hits = self.hits.entry(rule.to_string()).or_default();
        remember(hits, millis(at), times as usize);
    }

    /// Forgets what the rules no longer need: hits of rules without a limit
    /// (`limit_of` gives a rule's `times`) beyond it, and sends beyond the
    /// frequency cap's `max`. Rules reloaded with a higher limit or cap
    /// count only what the lower one kept.
    pub fn fit_to(&mut self, limit_of: impl Fn(&str) -> Option<u32>, cap: Option<u32>) {
        if !self.hits.is_empty() {
            self.hits.retain(|rule, hits| match limit_of(rule) {
                Some(times) => {
                    let keep = times as usize;
                    if hits.len() > keep {
                        hits.drain(..hits.len() - keep);
                    }
                    true
                }
                None => false,
            });
        }
        let keep = cap.map_or(0, |max| max as usize);
        if self.sends.len() > keep {
            self.sends.drain(..self.sends.len() - keep);
        }
    }

    /// Rebuilds the memory of a whole history (a state stored before
    /// version 2 held it all): every rule's and every send's latest
    /// [`Memory::LEGACY_KEPT`] times, until [`Memory::fit_to`] trims them.
    pub fn of_history(h: &History) -> Memory {
        let mut lead = LeadState::new("", chrono::DateTime::UNIX_EPOCH);
        for e in &h.ledger {
            lead.record_points(e.clone());
            lead.memory.hit(&e.rule, &e.at, Self::LEGACY_KEPT);
        }
        for e in &h.emails {
            lead.record_email(e.clone(), Some(Self::LEGACY_KEPT));
        }
        let c = &mut lead.memory.counts;
        c.transitions = h.transitions.len() as u64;
        c.assignments = h.assignments.len() as u64;
        c.feedback = h.feedback.len() as u64;
        lead.memory
    }

    /// How many times per rule and of sends [`Memory::of_history`] keeps.
    pub const LEGACY_KEPT: u32 = 100;

    /// How many of `rule`'s remembered hits fall in `(from, now]`.
    pub fn hits_within(&self, rule: &str, from: Option<&Timestamp>, now: &Timestamp) -> usize {
        let (from, now) = (from.map(millis), millis(now));
        self.hits.get(rule).map_or(0, |hits| {
            hits.iter()
                .filter(|&&t| t <= now && from.is_none_or(|f| t > f))
                .count()
        })
    }
}

/// Serde's test for a count left out of the stored state while it is 0.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Puts `t` in its place in the sorted `times` (an input may be older than
/// the last one seen) and keeps the latest `keep` of them.
fn remember(times: &mut Vec<i64>, t: i64, keep: usize) {
    let at = times.partition_point(|&x| x <= t);
    times.insert(at, t);
    if times.len() > keep {
        times.drain(..times.len() - keep);
    }
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
    /// The time of the latest input that decided something for the lead: an
    /// event, due work, a `schedule` tick that scored. An event that
    /// happened before it arrived late (docs/daemon.md, "Arrival order").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_to: Option<Timestamp>,
    /// Emails, notices and webhooks decided up to this time are history an
    /// import brought in (the latest import's time): recorded, not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_until: Option<Timestamp>,
    /// What happened to the lead, as far as its holder keeps it (see
    /// [`History`]). Not part of the stored state.
    #[serde(skip)]
    pub history: History,
    /// What the evaluator remembers of that history to decide: bounded.
    #[serde(default)]
    pub memory: Memory,
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
    /// SLA breaches since the lead was last routed afresh. Past
    /// `routing.sla.max_reassign` the clock stops for good, so this is at
    /// most one more than that: bounded, like everything stored here.
    /// Absent (0) in states stored before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sla_breaches: u32,
    /// When the current or last claim offer closes (`claim_within`): a
    /// claim from then on is refused as too late. Absent: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_due: Option<Timestamp>,
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
            seen_to: None,
            quiet_until: None,
            history: History::default(),
            memory: Memory::default(),
            enrollments: Vec::new(),
            cycle: 0,
            routing_rule: None,
            offered_to: Vec::new(),
            offered_at: None,
            sla_due: None,
            sla_breaches: 0,
            claim_due: None,
            undeliverable: false,
            cache: Default::default(),
        }
    }

    /// Points per rule, in the order each first scored: the score explanation.
    pub fn score_breakdown(&self) -> Vec<(String, i64)> {
        self.memory.points.clone()
    }

    /// Adds a ledger entry (the caller adds its points to the score).
    pub fn record_points(&mut self, entry: LedgerEntry) {
        let m = &mut self.memory;
        m.counts.ledger += 1;
        match m.points.iter_mut().find(|(r, _)| *r == entry.rule) {
            Some((_, p)) => *p = p.saturating_add(entry.points),
            None => m.points.push((entry.rule.clone(), entry.points)),
        }
        self.history.ledger.push(entry);
    }

    pub fn record_transition(&mut self, t: Transition) {
        self.memory.counts.transitions += 1;
        self.history.transitions.push(t);
    }

    /// Adds a marketing email decided; `keep` is the frequency cap's `max`
    /// (how many send times the cap needs remembered).
    pub fn record_email(&mut self, e: EmailRecord, keep: Option<u32>) {
        self.memory.counts.emails += 1;
        match keep {
            Some(keep) => remember(&mut self.memory.sends, millis(&e.at), keep as usize),
            None => self.memory.sends.clear(),
        }
        self.history.emails.push(e);
    }

    pub fn record_assignment(&mut self, a: Assignment) {
        self.memory.counts.assignments += 1;
        self.history.assignments.push(a);
    }

    pub fn record_feedback(&mut self, f: FeedbackRecord) {
        self.memory.counts.feedback += 1;
        self.history.feedback.push(f);
    }

    pub fn active_enrollment(&self, campaign: &str) -> Option<&Enrollment> {
        self.enrollments
            .iter()
            .find(|e| e.campaign == campaign && e.status == EnrollmentStatus::Active)
    }
}
