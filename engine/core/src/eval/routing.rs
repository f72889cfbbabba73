//! Step 7 of SPEC section 3: who gets a new SQL, claims, and the SLA clock.
//!
//! The [`Book`] is the routing state shared by all leads: open leads per
//! owner and each rule's rotation. It is part of the evaluator's input and
//! output like the lead itself.
//!
//! Routing always ends (issue 17): a full rule passes the lead on to the
//! next, an offer nobody claims expires (`claim_within`), and the SLA stops
//! after `max_reassign` breaches; what a lead remembers for that
//! (`sla_breaches`, `claim_due`) is bounded.

use super::{Effect, Note, Run, TimerKind, WebhookDetail};
use crate::cel as cond;
use crate::model::{time, Assignment, Stage};
use crate::rules::config::{OnBreach, Strategy, WebhookEvent};
use crate::rules::{RouteRule, Ruleset, Sla};
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

    /// Whether owner `owner` (an index into `rules.owners`) may take one
    /// more lead. Only a capacity reads the book (and marks it consulted).
    pub fn has_room(&mut self, rules: &Ruleset, owner: usize) -> bool {
        let o = &rules.owners[owner];
        match o.capacity {
            None => true,
            Some(c) => {
                self.consulted = true;
                self.open_count(&o.id) < c
            }
        }
    }
}

impl<'r> Run<'_, 'r> {
    /// Routes a lead that entered `sql`. A fresh start: the breaches counted
    /// and any claim deadline of an earlier routing are forgotten.
    pub(super) fn route(&mut self, exclude: Option<&str>) {
        self.lead.sla_breaches = 0;
        self.lead.claim_due = None;
        let rules = self.rules;
        if let Err(reason) = self.route_from(0, exclude) {
            self.lead.routing_rule = None;
            if !rules.route_rules.is_empty() || !rules.owners.is_empty() {
                self.note(Note::Unrouted { reason });
            }
        }
    }

    /// Tries the routing rules from index `start` on, in order: the first
    /// whose `if` holds and that has an owner below capacity assigns or
    /// offers the lead. A rule whose owners are all full is noted and passed
    /// over, so a lead is not left ownerless while a later rule could take
    /// it. `Err`: why no rule did.
    fn route_from(&mut self, start: usize, exclude: Option<&str>) -> Result<(), String> {
        let rules = self.rules;
        let mut full: Vec<&str> = Vec::new();
        for rule in rules.route_rules.iter().skip(start) {
            if let Some(c) = &rule.condition {
                if !self.holds(c) {
                    continue;
                }
            }
            if rule.strategy == Strategy::Claim {
                // Nobody could claim it if every owner is full.
                let book = &mut *self.book;
                if rule.owners.iter().any(|&i| book.has_room(rules, i)) {
                    let owners = rule
                        .owners
                        .iter()
                        .map(|&i| rules.owners[i].id.clone())
                        .collect();
                    self.offer(rule, owners);
                    return Ok(());
                }
            } else if let Some(i) = self.book.pick(rules, rule, exclude) {
                self.lead.routing_rule = Some(rule.name.clone());
                self.assign(i, &rule.name);
                return Ok(());
            }
            self.note(Note::RuleFull {
                rule: rule.name.clone(),
            });
            full.push(&rule.name);
        }
        let after = start
            .checked_sub(1)
            .and_then(|i| rules.route_rules.get(i))
            .map(|r| format!(" after `{}`", r.name))
            .unwrap_or_default();
        Err(if full.is_empty() {
            format!("no routing rule{after} matches")
        } else {
            let names: Vec<String> = full.iter().map(|n| format!("`{n}`")).collect();
            format!(
                "every owner of the matching routing rules{after} is at capacity: {}",
                names.join(", ")
            )
        })
    }

    /// Offers the lead to `owners` by claim rule `rule`, until its
    /// `claim_within` if it has one.
    fn offer(&mut self, rule: &RouteRule, owners: Vec<String>) {
        self.lead.routing_rule = Some(rule.name.clone());
        self.lead.offered_to = owners.clone();
        self.lead.offered_at = Some(self.now);
        self.lead.claim_due = rule.claim_within.map(|d| self.now + d);
        self.note(Note::Offered {
            rule: rule.name.clone(),
            owners: owners.clone(),
        });
        self.effects.push(Effect::OfferToOwners {
            owners,
            rule: rule.name.clone(),
        });
        if let Some(due) = self.lead.claim_due {
            self.schedule(
                due,
                TimerKind::Claim {
                    rule: rule.name.clone(),
                },
            );
        }
    }

    /// Gives the lead to `owner` (an index into `rules.owners`) and starts
    /// the SLA clock.
    fn assign(&mut self, owner: usize, rule: &str) {
        self.hand_over(owner, rule);
        let id = self.rules.owners[owner].id.clone();
        self.start_sla(&id);
    }

    /// Gives the lead to `owner`, with the owner's notice and webhooks, but
    /// no SLA clock (the SLA's fallback: the clock has stopped for good).
    fn hand_over(&mut self, owner: usize, rule: &str) {
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

    /// A `sales_claim`: the first claim by an offered owner within the
    /// offer's `claim_within` wins.
    pub(super) fn claim(&mut self, owner: &str) {
        let refuse = |run: &mut Self, reason: &str| {
            run.note(Note::ClaimRefused {
                owner: owner.to_string(),
                reason: reason.to_string(),
            })
        };
        // First, so that a claim after the deadline says so, whoever holds
        // the lead now (the fallback owner, a later rule's).
        if let Some(due) = self.lead.claim_due.filter(|d| self.now >= *d) {
            let reason = format!(
                "too late: the offer closed at {} (claim_within)",
                time::format(&due)
            );
            return refuse(self, &reason);
        }
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
        // Claimed in time: the deadline no longer applies.
        self.lead.claim_due = None;
        let rule = self.lead.routing_rule.clone().unwrap_or_default();
        self.assign(i, &rule);
    }

    /// The claim window of `rule` closed: unless someone claimed the lead,
    /// it goes to the rule's fallback owner, or on to the next rule whose
    /// `if` holds. `claim_due` stays, so later claims are refused as late.
    pub(super) fn claim_expired(&mut self, rule: &str) {
        if self.lead.owner.is_some()
            || self.lead.offered_to.is_empty()
            || self.lead.claim_due != Some(self.now)
            || self.lead.stage != Stage::Sql
            || self.lead.routing_rule.as_deref() != Some(rule)
        {
            return;
        }
        let rules = self.rules;
        let pos = rules.route_rules.iter().position(|r| r.name == rule);
        self.lead.offered_to.clear();
        self.lead.offered_at = None;
        self.touched(cond::fields::OWNER);
        if let Some(f) = pos.and_then(|p| rules.route_rules[p].fallback) {
            let id = rules.owners[f].id.clone();
            if self.book.has_room(rules, f) {
                self.note(Note::ClaimExpired {
                    rule: rule.to_string(),
                    to: Some(id),
                });
                return self.assign(f, rule);
            }
            self.note(Note::FallbackFull { owner: id });
        }
        self.note(Note::ClaimExpired {
            rule: rule.to_string(),
            to: None,
        });
        // A rule dropped by a reload: start over from the first.
        let start = pos.map_or(0, |p| p + 1);
        if let Err(reason) = self.route_from(start, None) {
            self.lead.routing_rule = None;
            self.note(Note::Unrouted { reason });
        }
    }

    /// The SLA timer fired: breach unless feedback came or the owner changed.
    /// Each breach is noted and escalated once; up to `max_reassign` of them
    /// start the clock again, the next stops it for good.
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
        let breaches = self.lead.sla_breaches.saturating_add(1);
        self.lead.sla_breaches = breaches;
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
        if breaches > sla.max_reassign {
            return self.sla_stop(owner, &sla, breaches);
        }
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
                    self.touched(cond::fields::OWNER);
                    self.offer(rule, others);
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

    /// The breach past `max_reassign`: no clock any more. The lead goes to
    /// the SLA's fallback owner if there is one with room (a normal notice,
    /// no clock), else it stays with `owner`.
    fn sla_stop(&mut self, owner: &str, sla: &Sla, breaches: u32) {
        let rules = self.rules;
        let to = match sla.fallback {
            Some(f) if rules.owners[f].id != owner => {
                if self.book.has_room(rules, f) {
                    Some(f)
                } else {
                    self.note(Note::FallbackFull {
                        owner: rules.owners[f].id.clone(),
                    });
                    None
                }
            }
            _ => None,
        };
        self.note(Note::SlaStopped {
            owner: owner.to_string(),
            breaches,
            to: to.map(|f| rules.owners[f].id.clone()),
        });
        if let Some(f) = to {
            self.book.release(owner);
            let rule = self.lead.routing_rule.clone().unwrap_or_default();
            self.hand_over(f, &rule);
        }
    }
}
