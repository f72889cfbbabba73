//! Prometheus metrics, named once here.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    /// When the processor last committed a step or found nothing to do
    /// (epoch ms): `/healthz` says it is not advancing when this gets old.
    last_progress: std::sync::atomic::AtomicI64,
    /// Why the last write failed, until a write succeeds again (`/healthz`).
    storage_error: Reason,
    /// Why the last rules change was rejected, until one is taken (`/healthz`).
    rules_error: Reason,
}

impl Default for Metrics {
    fn default() -> Self {
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
            sla_breaches: Counter::default(),
            webhooks_delivered: Counter::default(),
            webhook_attempts_failed: Counter::default(),
            webhooks_failed: Counter::default(),
            storage_errors: Counter::default(),
            leads_quarantined: Gauge::default(),
            plugin_calls_in_flight: Gauge::default(),
            steps_redone: Counter::default(),
            last_progress: chrono::Utc::now().timestamp_millis().into(),
            storage_error: Default::default(),
            rules_error: Default::default(),
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
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// A write failed: counted, and `/healthz` reports the cause until a
    /// write succeeds.
    pub fn storage_failed(&self, cause: String) {
        self.storage_errors.inc();
        self.storage_error.set(cause);
    }

    /// A write was committed: the database takes writes.
    pub fn storage_ok(&self) {
        if self.storage_error.clear() {
            tracing::info!("database writes succeed again");
        }
    }

    /// Why the last write failed, if none succeeded since.
    pub fn storage_error(&self) -> Option<String> {
        self.storage_error.get()
    }

    /// A rules change was rejected (the rules in force keep running):
    /// counted, and `/healthz` reports why until a change is taken.
    pub fn rules_rejected(&self, why: String) {
        self.rules_rejected.inc();
        self.rules_error.set(why);
    }

    /// New rules are in force.
    pub fn rules_reloaded(&self) {
        self.rules_reloaded.inc();
        self.rules_error.clear();
    }

    /// Why the last rules change was rejected, if none was taken since.
    pub fn rules_error(&self) -> Option<String> {
        self.rules_error.get()
    }

    /// The processor committed a step, or found nothing to do.
    pub fn processor_advanced(&self) {
        self.last_progress.store(
            chrono::Utc::now().timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// How long since the processor last advanced.
    pub fn since_processor_advanced(&self) -> std::time::Duration {
        let last = self
            .last_progress
            .load(std::sync::atomic::Ordering::Relaxed);
        let ms = chrono::Utc::now().timestamp_millis().saturating_sub(last);
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Why something last went wrong, until it goes right again (`/healthz`).
#[derive(Default)]
struct Reason(std::sync::Mutex<Option<String>>);

impl Reason {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, why: String) {
        *self.lock() = Some(why);
    }

    /// Whether there was a reason to clear.
    fn clear(&self) -> bool {
        self.lock().take().is_some()
    }

    fn get(&self) -> Option<String> {
        self.lock().clone()
    }
}
