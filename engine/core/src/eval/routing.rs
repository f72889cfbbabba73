//! Step 7 of SPEC section 3: who gets a new SQL, claims, and the SLA clock.
//!
//! The [`Book`] is the routing state shared by all leads: open leads per
//! owner and each rule's rotation. It is part of the evaluator's input and
//! output like the lead itself.

use super::{Effect, Note, Run, TimerKind, WebhookDetail};
use crate::cel as cond;
use crate::model::{Assignment, Stage};
use crate::rules::config::{OnBreach, Strategy, WebhookEvent};
use crate::rules::{RouteRule, Ruleset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Book {
    /// Open leads per owner: assigned and not yet won, lost or rejected.
    pub open: BTreeMap<String, u32>,
    /// `round_robin`: where each rule's rotation resumes.
    pub cursor: BTreeMap<String, usize>,
    /// `weighted`: each rule's smooth weighted round-robin state, per owner.
    pub current: BTreeMap<String, Vec<i64>>,
    /// Whether a decision read the book since it was loaded (an owner picked,
    /// a capacity checked): a decision that found every owner full depends
    /// on it as much as one that took a place. Not stored; the daemon uses
    /// it to order such decisions across partitions (docs/daemon.md).
    #[serde(skip)]
    pub consulted: bool,
}

impl Book {
    pub fn open_count(&self, owner: &str) -> u32 {
        self.open.get(owner).copied().unwrap_or(0)
    }

    pub fn take(&mut self, owner: &str) {
        self.consulted = true;
        *self.open.entry(owner.to_string()).or_default() += 1;
    }

    pub fn release(&mut self, owner: &str) {
        self.consulted = true;
        if let Some(n) = self.open.get_mut(owner) {
            *n = n.saturating_sub(1);
        }
    }

    /// Picks an owner for `rule` by its strategy: one below capacity and not
    /// `exclude`. Returns an index into `rules.owners`.
    pub fn pick(
        &mut self,
        rules: &Ruleset,
        rule: &RouteRule,
        exclude: Option<&str>,
    ) -> Option<usize> {
        self.consulted = true;
        let eligible = |book: &Book, i: usize| {
            let o = &rules.owners[i];
            Some(o.id.as_str()) != exclude && o.capacity.is_none_or(|c| book.open_count(&o.id) < c)
        };
        let n = rule.owners.len();
        match rule.strategy {
            Strategy::RoundRobin => {
                let start = self.cursor.get(&rule.name).copied().unwrap_or(0);
                let k = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&k| eligible(self, rule.owners[k]))?;
                self.cursor.insert(rule.name.clone(), k + 1);
                Some(rule.owners[k])
            }
            Strategy::LeastLoaded => rule
                .owners
                .iter()
                .copied()
                .filter(|&i| eligible(self, i))
                .min_by_key(|&i| self.open_count(&rules.owners[i].id)),
            Strategy::Weighted => {
                let ok: Vec<bool> = rule.owners.iter().map(|&i| eligible(self, i)).collect();
                let current = self
                    .current
                    .entry(rule.name.clone())
                    .or_insert_with(|| vec![0; n]);
                current.resize(n, 0);
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for k in 0..n {
                    if !ok[k] {
                        continue;
                    }
                    let w = rules.owners[rule.owners[k]].weight as i64;
                    current[k] += w;
                    total += w;
                    if best.is_none_or(|b| current[k] > current[b]) {
                        best = Some(k);
                    }
                }
                let b = best?;
                current[b] -= total;
                Some(rule.owners[b])
            }
            // Claims are decided by the owners, not picked.
            Strategy::Claim => None,
        }
    }
}

impl<'r> Run<'_, 'r> {
    /// The first routing rule whose condition holds.
    fn matching_rule(&mut self) -> Option<&'r RouteRule> {
        let rules = self.rules;
        rules.route_rules.iter().find(|r| match &r.condition {
            None => true,
            Some(c) => self.holds(c),
        })
    }

    /// Routes a lead that entered `sql`.
    pub(super) fn route(&mut self, exclude: Option<&str>) {
        let rules = self.rules;
        let Some(rule) = self.matching_rule() else {
            if !rules.route_rules.is_empty() || !rules.owners.is_empty() {
                self.note(Note::Unrouted {
                    reason: "no routing rule matches".into(),
                });
            }
            return;
        };
        self.lead.routing_rule = Some(rule.name.clone());
        if rule.strategy == Strategy::Claim {
            let owners: Vec<String> = rule
                .owners
                .iter()
                .map(|&i| rules.owners[i].id.clone())
                .collect();
            self.lead.offered_to = owners.clone();
            self.lead.offered_at = Some(self.now);
            self.note(Note::Offered {
                rule: rule.name.clone(),
                owners: owners.clone(),
            });
            self.effects.push(Effect::OfferToOwners {
                owners,
                rule: rule.name.clone(),
            });
            return;
        }
        match self.book.pick(rules, rule, exclude) {
            Some(i) => self.assign(i, &rule.name),
            None => self.note(Note::Unrouted {
                reason: format!("every owner of routing rule `{}` is at capacity", rule.name),
            }),
        }
    }

    fn assign(&mut self, owner: usize, rule: &str) {
        let o = &self.rules.owners[owner];
        self.book.take(&o.id);
        self.lead.owner = Some(o.id.clone());
        self.lead.offered_to.clear();
        self.lead.offered_at = None;
        self.lead.record_assignment(Assignment {
            owner: o.id.clone(),
            rule: rule.to_string(),
            at: self.now,
        });
        self.touched(cond::fields::OWNER);
        self.effects.push(Effect::NotifyOwner {
            owner: o.id.clone(),
            email: o.email.clone(),
            rule: rule.to_string(),
        });
        self.webhook(
            WebhookEvent::Assigned,
            WebhookDetail {
                owner: Some(o.id.clone()),
                rule: Some(rule.to_string()),
                ..Default::default()
            },
        );
        self.start_sla(&o.id.clone());
    }

    fn start_sla(&mut self, owner: &str) {
        if let Some(sla) = &self.rules.sla {
            let due = self.now + sla.accept_within;
            self.lead.sla_due = Some(due);
            self.schedule(
                due,
                TimerKind::Sla {
                    owner: owner.to_string(),
                },
            );
        }
    }

    /// A `sales_claim`: the first claim by an offered owner wins.
    pub(super) fn claim(&mut self, owner: &str) {
        let refuse = |run: &mut Self, reason: &str| {
            run.note(Note::ClaimRefused {
                owner: owner.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.lead.owner.is_some() {
            return refuse(self, "the lead already has an owner");
        }
        if !self.lead.offered_to.iter().any(|o| o == owner) {
            return refuse(self, "the lead is not offered to this owner");
        }
        let rules = self.rules;
        let Some(i) = rules.owner_index(owner) else {
            return refuse(self, "unknown owner");
        };
        self.book.consulted = true;
        if rules.owners[i]
            .capacity
            .is_some_and(|c| self.book.open_count(owner) >= c)
        {
            return refuse(self, "the owner is at capacity");
        }
        let rule = self.lead.routing_rule.clone().unwrap_or_default();
        self.assign(i, &rule);
    }

    /// The SLA timer fired: breach unless feedback came or the owner changed.
    pub(super) fn sla_due(&mut self, owner: &str) {
        if self.lead.owner.as_deref() != Some(owner)
            || self.lead.sla_due != Some(self.now)
            || self.lead.stage != Stage::Sql
        {
            return;
        }
        let Some(sla) = self.rules.sla.clone() else {
            return;
        };
        self.lead.sla_due = None;
        self.note(Note::SlaBreached {
            owner: owner.to_string(),
        });
        if let Some(to) = &sla.notify {
            self.effects.push(Effect::NotifySlaBreach {
                to: to.clone(),
                owner: owner.to_string(),
            });
        }
        self.webhook(
            WebhookEvent::SlaBreached,
            WebhookDetail {
                owner: Some(owner.to_string()),
                ..Default::default()
            },
        );
        let rules = self.rules;
        let rule = self
            .lead
            .routing_rule
            .as_ref()
            .and_then(|n| rules.route_rules.iter().find(|r| &r.name == n));
        if sla.on_breach == OnBreach::Reassign {
            if let Some(rule) = rule.filter(|r| r.strategy == Strategy::Claim) {
                // Back to the pool, for the others to claim.
                let others: Vec<String> = rule
                    .owners
                    .iter()
                    .map(|&i| rules.owners[i].id.clone())
                    .filter(|o| o != owner)
                    .collect();
                if !others.is_empty() {
                    self.book.release(owner);
                    self.lead.owner = None;
                    self.lead.offered_to = others.clone();
                    self.lead.offered_at = Some(self.now);
                    self.touched(cond::fields::OWNER);
                    self.note(Note::Offered {
                        rule: rule.name.clone(),
                        owners: others.clone(),
                    });
                    self.effects.push(Effect::OfferToOwners {
                        owners: others,
                        rule: rule.name.clone(),
                    });
                    return;
                }
            }
            if let Some(rule) = rule {
                if let Some(next) = self.book.pick(rules, rule, Some(owner)) {
                    self.book.release(owner);
                    return self.assign(next, &rule.name);
                }
            }
        }
        // Nobody else to take it: the same owner is reminded after another period.
        self.start_sla(owner);
    }
}
