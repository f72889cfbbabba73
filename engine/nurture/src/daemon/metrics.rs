//! Prometheus metrics, named once here. What `/healthz` reads lives in
//! [`Health`]; the events that count and change health at once
//! (`storage_failed`, `rules_rejected`, ...) go through here to both.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

use super::health::Health;

pub struct Metrics {
    registry: Registry,
    pub events_ingested: Counter,
    pub events_duplicate: Counter,
    pub events_processed: Counter,
    pub rule_errors: Counter,
    pub rules_reloaded: Counter,
    pub rules_rejected: Counter,
    /// Seconds from an event's acceptance to its decision being committed.
    pub processing_latency: Histogram,
    pub events_pending: Gauge,
    pub due_work: Gauge,
    pub emails_sent: Counter,
    pub emails_failed: Counter,
    pub emails_retried: Counter,
    /// Sent again after a crash left the first try's outcome unknown.
    pub emails_resent: Counter,
    pub emails_cancelled: Counter,
    pub emails_not_composed: Counter,
    pub withheld: Counter,
    /// Owners who let the SLA pass (each breach, repeated ones too).
    pub sla_breaches: Counter,
    pub webhooks_delivered: Counter,
    /// Attempts that failed (each is retried until the webhook fails for good).
    pub webhook_attempts_failed: Counter,
    /// Webhooks given up after 24 hours of retries.
    pub webhooks_failed: Counter,
    /// Database writes that failed (disk full, read-only, unreachable).
    pub storage_errors: Counter,
    /// Leads set aside by the processor (`quarantine`), now.
    pub leads_quarantined: Gauge,
    /// Plugin calls running now.
    pub plugin_calls_in_flight: Gauge,
    /// Steps done again because what they read changed before they could
    /// write (another process, an erasure, a release from quarantine).
    pub steps_redone: Counter,
    /// Steps ended early: an item would have changed the routing book while
    /// another partition had earlier work (it waits for a later step).
    pub steps_waited: Counter,
    /// Events that came before their lead's history's end and took their
    /// place in it (the lead re-folded), and those applied as they arrived
    /// (later than the allowed lateness, or refused by the re-fold).
    pub events_refolded: Counter,
    pub events_late: Counter,
    /// Leads a `schedule` tick evaluated (it skips those it cannot change).
    pub tick_leads: Counter,
    /// Rows pruned by retention, per kind (PruneKind order).
    pruned: [Counter; 4],
    /// Sender polls that found the outbox held (`--hold-outbox`): nothing
    /// was claimed.
    pub outbox_held_polls: Counter,
    /// 1 while the outbox is held, 0 otherwise.
    pub outbox_held: Gauge,
    /// What `/healthz` reads, told of failures as they are counted.
    health: Arc<Health>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(Arc::new(Health::default()))
    }
}

impl Metrics {
    /// The metrics, reporting failures and reloads to `health` as well.
    pub fn new(health: Arc<Health>) -> Self {
        let mut registry = Registry::with_prefix("nurture");
        let m = Metrics {
            events_ingested: Counter::default(),
            events_duplicate: Counter::default(),
            events_processed: Counter::default(),
            rule_errors: Counter::default(),
            rules_reloaded: Counter::default(),
            rules_rejected: Counter::default(),
            processing_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            events_pending: Gauge::default(),
            due_work: Gauge::default(),
            emails_sent: Counter::default(),
            emails_failed: Counter::default(),
            emails_retried: Counter::default(),
            emails_resent: Counter::default(),
            emails_cancelled: Counter::default(),
            emails_not_composed: Counter::default(),
            withheld: Counter::default(),
            sla_breaches: Counter::default(),
            webhooks_delivered: Counter::default(),
            webhook_attempts_failed: Counter::default(),
            webhooks_failed: Counter::default(),
            storage_errors: Counter::default(),
            leads_quarantined: Gauge::default(),
            plugin_calls_in_flight: Gauge::default(),
            steps_redone: Counter::default(),
            steps_waited: Counter::default(),
            events_refolded: Counter::default(),
            events_late: Counter::default(),
            tick_leads: Counter::default(),
            pruned: Default::default(),
            outbox_held_polls: Counter::default(),
            outbox_held: Gauge::default(),
            health,
            registry: Registry::default(),
        };
        registry.register(
            "events_ingested",
            "Events accepted (new ids)",
            m.events_ingested.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events acknowledged as duplicates",
            m.events_duplicate.clone(),
        );
        registry.register(
            "events_processed",
            "Events applied by the evaluator",
            m.events_processed.clone(),
        );
        registry.register(
            "rule_errors",
            "Condition and plugin errors while evaluating",
            m.rule_errors.clone(),
        );
        registry.register(
            "rules_reloaded",
            "Rules reloads that took effect",
            m.rules_reloaded.clone(),
        );
        registry.register(
            "rules_rejected",
            "Rules changes rejected for errors",
            m.rules_rejected.clone(),
        );
        registry.register(
            "processing_latency_seconds",
            "From acceptance to committed decision",
            m.processing_latency.clone(),
        );
        registry.register(
            "events_pending",
            "Accepted events not yet applied",
            m.events_pending.clone(),
        );
        registry.register(
            "due_work",
            "Scheduled work items stored",
            m.due_work.clone(),
        );
        for (name, help, c) in [
            ("emails_sent", "Emails and notifications accepted by the mail server (or written to the outbox folder)", &m.emails_sent),
            ("emails_failed", "Sends refused for good (5xx) or given up after 24 hours", &m.emails_failed),
            ("emails_retried", "Sends that failed for now and wait to be retried", &m.emails_retried),
            ("emails_resent", "Sends repeated because a crash left the first try's outcome unknown", &m.emails_resent),
            ("emails_cancelled", "Marketing emails dropped at send time (opted out or erased since)", &m.emails_cancelled),
            ("emails_not_composed", "Emails the engine decided on but could not render (template error, no address)", &m.emails_not_composed),
            ("withheld", "Emails, notices and webhooks of imported history, recorded and not sent", &m.withheld),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "sla_breaches",
            "Sales SLAs breached (no feedback in time)",
            m.sla_breaches.clone(),
        );
        registry.register(
            "webhooks_delivered",
            "Webhooks delivered (2xx)",
            m.webhooks_delivered.clone(),
        );
        registry.register(
            "webhook_attempts_failed",
            "Webhook attempts that failed and were retried or given up",
            m.webhook_attempts_failed.clone(),
        );
        registry.register(
            "webhooks_failed",
            "Webhooks given up after retrying for 24 hours",
            m.webhooks_failed.clone(),
        );
        registry.register(
            "storage_errors",
            "Database writes that failed (disk full, read-only, unreachable) and were refused or retried",
            m.storage_errors.clone(),
        );
        registry.register(
            "leads_quarantined",
            "Leads set aside because their step could not be applied (nurture doctor lists them)",
            m.leads_quarantined.clone(),
        );
        registry.register(
            "plugin_calls_in_flight",
            "Plugin calls running now",
            m.plugin_calls_in_flight.clone(),
        );
        registry.register(
            "steps_redone",
            "Processing steps done again because what they read changed before they could write",
            m.steps_redone.clone(),
        );
        registry.register(
            "steps_waited",
            "Processing steps ended before an item that would change the routing book ahead of another partition's earlier work",
            m.steps_waited.clone(),
        );
        registry.register(
            "events_refolded",
            "Events that arrived before their lead's history's end and took their place in it (the lead re-folded)",
            m.events_refolded.clone(),
        );
        registry.register(
            "events_late",
            "Events that arrived before their lead's history's end and were applied as they arrived (later than the allowed lateness, or a re-fold refused)",
            m.events_late.clone(),
        );
        registry.register(
            "tick_leads",
            "Leads a schedule tick evaluated: those its rules may change (a lead no schedule rule can change until its next event is skipped)",
            m.tick_leads.clone(),
        );
        for (kind, c) in crate::store::PruneKind::ALL.iter().zip(&m.pruned) {
            registry.register(
                format!("pruned_{}", kind.as_str()),
                format!(
                    "Rows pruned by retention: {}",
                    match kind {
                        crate::store::PruneKind::EventPayloads =>
                            "payloads of events applied (the rows stay)",
                        crate::store::PruneKind::Timeline => "timeline entries deleted",
                        crate::store::PruneKind::OutboxBodies =>
                            "bodies of messages no longer pending (the rows stay)",
                        crate::store::PruneKind::Ledger => "ledger rows deleted",
                    }
                ),
                c.clone(),
            );
        }
        registry.register(
            "outbox_held_polls",
            "Sender polls that found the outbox held (serve --hold-outbox, nurture outbox hold): nothing was sent",
            m.outbox_held_polls.clone(),
        );
        registry.register(
            "outbox_held",
            "1 while the outbox is held: nothing pending is sent until nurture outbox release or cancel",
            m.outbox_held.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Where failures and reloads are reported for `/healthz`.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// A write failed: counted, and `/healthz` reports the cause until a
    /// write succeeds.
    pub fn storage_failed(&self, cause: String) {
        self.storage_errors.inc();
        self.health.storage_failed(cause);
    }

    /// A write was committed: the database takes writes.
    pub fn storage_ok(&self) {
        self.health.storage_ok();
    }

    /// A rules change was rejected (the rules in force keep running):
    /// counted, and `/healthz` reports why until a change is taken.
    pub fn rules_rejected(&self, why: String) {
        self.rules_rejected.inc();
        self.health.rules_rejected(why);
    }

    /// New rules are in force.
    pub fn rules_reloaded(&self) {
        self.rules_reloaded.inc();
        self.health.rules_reloaded();
    }

    /// The counter of rows of `kind` pruned.
    pub fn pruned(&self, kind: crate::store::PruneKind) -> &Counter {
        let i = crate::store::PruneKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        &self.pruned[i]
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Group commit (store/group_commit.rs) reports its writes here.
impl crate::store::WriteObserver for Metrics {
    fn written(&self) {
        self.storage_ok();
    }
    fn failed(&self, cause: String) {
        self.storage_failed(cause);
    }
}
