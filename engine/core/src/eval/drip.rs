//! Step 6 of SPEC section 3 and due drip steps: enroll, exit, and send a
//! step when consent, the frequency cap and the send window allow.

use super::{Effect, Note, Postponed, Run, TimerKind};
use crate::model::time::{from_millis, millis, Timestamp};
use crate::model::{Consent, EmailRecord, Enrollment, EnrollmentStatus};
use crate::rules::config::ZoneSpec;
use crate::rules::{cron5, Campaign};
use chrono::Utc;

impl Run<'_, '_> {
    /// Exits and enrollments, campaign by campaign in order; steps that were
    /// waiting for consent go out now that it is given.
    pub(super) fn campaigns(&mut self) {
        let rules = self.rules;
        for c in &rules.campaigns {
            if let Some(pos) = self.active(&c.name) {
                if let Some(reason) = self.exit_reason(c) {
                    self.exit(pos, &c.name, reason);
                } else if self.lead.enrollments[pos].waiting_consent && self.may_receive() {
                    let e = &mut self.lead.enrollments[pos];
                    e.waiting_consent = false;
                    e.due_at = Some(self.now);
                    let (cycle, step) = (e.cycle, e.next_step);
                    self.schedule(
                        self.now,
                        TimerKind::Drip {
                            campaign: c.name.clone(),
                            cycle,
                            step,
                        },
                    );
                }
                continue;
            }
            let cycle = self.lead.cycle;
            let enrolled_this_cycle = self
                .lead
                .enrollments
                .iter()
                .any(|e| e.campaign == c.name && e.cycle == cycle);
            if enrolled_this_cycle
                || self.lead.consent == Consent::OptedOut
                || self.lead.undeliverable
                || !self.holds(&c.enroll)
            {
                continue;
            }
            let due = c.steps[0].due(self.now, self.now);
            self.lead.enrollments.push(Enrollment {
                campaign: c.name.clone(),
                cycle,
                enrolled_at: self.now,
                status: EnrollmentStatus::Active,
                next_step: 0,
                due_at: Some(due),
                waiting_consent: false,
                sent_ahead: Vec::new(),
            });
            self.note(Note::Enrolled {
                campaign: c.name.clone(),
            });
            self.schedule(
                due,
                TimerKind::Drip {
                    campaign: c.name.clone(),
                    cycle,
                    step: 0,
                },
            );
        }
    }

    fn active(&self, campaign: &str) -> Option<usize> {
        self.lead
            .enrollments
            .iter()
            .position(|e| e.campaign == campaign && e.status == EnrollmentStatus::Active)
    }

    fn exit_reason(&mut self, c: &Campaign) -> Option<String> {
        if self.lead.consent == Consent::OptedOut {
            return Some("opted out".into());
        }
        if self.lead.undeliverable {
            return Some("email undeliverable".into());
        }
        let cond = c.exit.as_ref()?;
        self.holds(cond).then(|| "exit condition".into())
    }

    fn exit(&mut self, pos: usize, campaign: &str, reason: String) {
        let e = &mut self.lead.enrollments[pos];
        e.status = EnrollmentStatus::Exited;
        e.due_at = None;
        e.waiting_consent = false;
        self.note(Note::Exited {
            campaign: campaign.to_string(),
            reason,
        });
    }

    fn may_receive(&self) -> bool {
        !self.rules.settings.require_consent || self.lead.consent == Consent::OptedIn
    }

    /// A drip step fell due.
    pub(super) fn due_step(&mut self, campaign: &str, cycle: u32, step: usize) {
        let rules = self.rules;
        let Some(c) = rules.campaigns.iter().find(|c| c.name == campaign) else {
            return;
        };
        let Some(pos) = self.active(campaign) else {
            return;
        };
        let e = &self.lead.enrollments[pos];
        if e.cycle != cycle
            || e.next_step != step
            || e.due_at != Some(self.now)
            || e.waiting_consent
        {
            return; // stale: sent, rescheduled or left since
        }
        if let Some(reason) = self.exit_reason(c) {
            return self.exit(pos, campaign, reason);
        }
        let Some(s) = c.steps.get(step) else { return };
        // Sent before a late event re-ordered the lead's history: it went
        // out once, and is not sent again.
        let ahead = &mut self.lead.enrollments[pos].sent_ahead;
        if let Some(k) = ahead.iter().position(|&a| a == step) {
            ahead.remove(k);
            return self.advance(pos, c, step);
        }
        if let Some(cond) = &s.condition {
            if !self.holds(cond) {
                self.note(Note::StepSkipped {
                    campaign: campaign.to_string(),
                    step: step + 1,
                });
                return self.advance(pos, c, step);
            }
        }
        if !self.may_receive() {
            self.lead.enrollments[pos].waiting_consent = true;
            return self.note(Note::StepPostponed {
                campaign: campaign.to_string(),
                step: step + 1,
                reason: Postponed::Consent,
                until: None,
            });
        }
        if let Some(until) = self.cap_allows_at() {
            return self.postpone(pos, c, step, Postponed::FrequencyCap, until);
        }
        if let Some(until) = self.window_opens_at(c) {
            return self.postpone(pos, c, step, Postponed::Window, until);
        }
        let keep = self.rules.cap_max();
        self.lead.record_email(
            EmailRecord {
                campaign: campaign.to_string(),
                step: step + 1,
                template: s.template.clone(),
                at: self.now,
            },
            keep,
        );
        self.effects.push(Effect::SendEmail {
            campaign: campaign.to_string(),
            cycle,
            step: step + 1,
            template: s.template.clone(),
        });
        self.advance(pos, c, step);
    }

    /// Schedules the step after `step` (sent or skipped now): `after` from
    /// now, `at` from the enrollment but not before now; or completes.
    fn advance(&mut self, pos: usize, c: &Campaign, step: usize) {
        let next = step + 1;
        let e = &mut self.lead.enrollments[pos];
        e.next_step = next;
        match c.steps.get(next) {
            Some(s) => {
                let due = s.due(e.enrolled_at, self.now);
                e.due_at = Some(due);
                let cycle = e.cycle;
                self.schedule(
                    due,
                    TimerKind::Drip {
                        campaign: c.name.clone(),
                        cycle,
                        step: next,
                    },
                );
            }
            None => {
                e.status = EnrollmentStatus::Completed;
                e.due_at = None;
                self.note(Note::Completed {
                    campaign: c.name.clone(),
                });
            }
        }
    }

    fn postpone(
        &mut self,
        pos: usize,
        c: &Campaign,
        step: usize,
        reason: Postponed,
        until: Timestamp,
    ) {
        let e = &mut self.lead.enrollments[pos];
        e.due_at = Some(until);
        let cycle = e.cycle;
        self.note(Note::StepPostponed {
            campaign: c.name.clone(),
            step: step + 1,
            reason,
            until: Some(until),
        });
        self.schedule(
            until,
            TimerKind::Drip {
                campaign: c.name.clone(),
                cycle,
                step,
            },
        );
    }

    /// With the frequency cap full now, the first moment it allows a send.
    fn cap_allows_at(&self) -> Option<Timestamp> {
        let (max, per) = self.rules.settings.frequency_cap?;
        let (from, now) = (millis(&(self.now - per)), millis(&self.now));
        // The lead remembers the latest `max` sends, sorted.
        let recent: Vec<i64> = self
            .lead
            .memory
            .sends
            .iter()
            .copied()
            .filter(|&at| at > from && at <= now)
            .collect();
        if recent.len() < max as usize {
            return None;
        }
        // Once the oldest emails that overfill the cap leave the window.
        Some(from_millis(recent[recent.len() - max as usize]) + per)
    }

    /// Outside the campaign's send window, the start of its next minute.
    fn window_opens_at(&self, c: &Campaign) -> Option<Timestamp> {
        let window = c.window.as_ref()?;
        let tz = match &c.zone {
            Some(ZoneSpec::Fixed(tz)) => *tz,
            // The lead's attribute, if it names a zone; otherwise UTC.
            Some(zone) => zone
                .attribute()
                .and_then(|key| self.lead.attributes.get(key))
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(chrono_tz::UTC),
            None => chrono_tz::UTC,
        };
        let local = self.now.with_timezone(&tz);
        if cron5::includes_minute(window, &local) {
            return None;
        }
        cron5::next_after(window, &local).map(|t| t.with_timezone(&Utc))
    }
}
