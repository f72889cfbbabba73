//! Prometheus metrics, named once here. What `/healthz` reads lives in
//! [`Health`]; the events that count and change health at once
//! (`storage_failed`, `rules_rejected`, ...) go through here to both.
//!
//! Labels are what an operator filters on, each with a bounded set of
//! values: names from the rules (rule, plugin, campaign, step, webhook,
//! owner), kinds and states from the code, and HTTP route templates (never
//! raw paths, which hold lead ids). The backlog gauges are set from the
//! database when `/metrics` is scraped ([`Metrics::set_backlog`]), so they
//! agree with `/healthz`. Process metrics (`process_*`, unprefixed, as
//! every Prometheus client names them) are read from /proc at each scrape.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::health::Health;
use crate::model::time::Timestamp;
use crate::store::Backlog;

/// Latency buckets from a millisecond to eight hours: a backlog of hours
/// (an outage, a slow plugin) still lands in a bucket of its own.
pub const LATENCY_BUCKETS: [f64; 23] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
];

/// HTTP request durations: half a millisecond to a minute.
const HTTP_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn http_duration() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// A seconds gauge.
pub type Seconds = Gauge<f64, AtomicU64>;

/// Rule errors: which kind (`condition_error`, `not_a_number`,
/// `plugin_failed`), of which rule or plugin (the other is empty).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleErrorLabels {
    pub error: String,
    pub rule: String,
    pub plugin: String,
}

/// Mail: `kind` (`email`, `notification`), the campaign and step of a drip
/// email (empty for notices), the transport (`smtp`, `files`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MailLabels {
    pub kind: String,
    pub campaign: String,
    pub step: String,
    pub transport: String,
}

impl MailLabels {
    /// From an outgoing message's `what` (`campaign/step`, or a notice's
    /// name) and kind.
    pub fn of(kind: &str, what: &str, transport: &str) -> MailLabels {
        let (campaign, step) = match kind {
            "email" => what.split_once('/').unwrap_or((what, "")),
            _ => ("", ""),
        };
        MailLabels {
            kind: kind.to_string(),
            campaign: campaign.to_string(),
            step: step.to_string(),
            transport: transport.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnerLabels {
    pub owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

/// An outbox kind: `email`, `notification`, `webhook`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// An HTTP request: its method, route template (`/v1/leads/{id}`;
/// `unmatched` for no route) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

pub struct Metrics {
    registry: Registry,
    /// `process_*`: no prefix.
    process: Registry,
    pub events_ingested: Counter,
    pub events_duplicate: Counter,
    pub events_processed: Counter,
    pub rule_errors: Family<RuleErrorLabels, Counter>,
    pub rules_reloaded: Counter,
    pub rules_rejected: Counter,
    /// Seconds from an event's acceptance to its decision being committed.
    pub processing_latency: Histogram,
    pub events_pending: Gauge,
    /// Age of the oldest event accepted and not applied (0: none waits).
    pub events_oldest_pending: Seconds,
    pub due_work: Gauge,
    /// Due work whose time has come, not yet done, and the oldest's lateness.
    pub due_work_overdue: Gauge,
    pub due_work_oldest_overdue: Seconds,
    /// Outbox rows not yet delivered, and the oldest's age, by kind.
    pub outbox_pending: Family<KindLabels, Gauge>,
    pub outbox_oldest_pending: Family<KindLabels, Seconds>,
    /// Seconds from a message's decision to its delivery, by kind.
    pub delivery_latency: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// 1 while the mail transport works (the last send did not fail for now).
    pub transport_up: Family<KindLabels, Gauge>,
    /// `/readyz`'s answer at its last check or scrape (1 ready, 0 not).
    pub ready: Gauge,
    pub emails_sent: Family<MailLabels, Counter>,
    pub emails_failed: Family<MailLabels, Counter>,
    pub emails_retried: Family<MailLabels, Counter>,
    /// Sent again after a crash left the first try's outcome unknown.
    pub emails_resent: Family<MailLabels, Counter>,
    pub emails_cancelled: Family<MailLabels, Counter>,
    pub emails_not_composed: Counter,
    pub withheld: Counter,
    /// Owners who let the SLA pass (each breach, repeated ones too).
    pub sla_breaches: Family<OwnerLabels, Counter>,
    pub webhooks_delivered: Family<WebhookLabels, Counter>,
    /// Attempts that failed (each is retried until the webhook fails for good).
    pub webhook_attempts_failed: Family<WebhookLabels, Counter>,
    /// Webhooks given up after 24 hours of retries.
    pub webhooks_failed: Family<WebhookLabels, Counter>,
    /// HTTP requests answered, and how long each took.
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
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
            rule_errors: Family::default(),
            rules_reloaded: Counter::default(),
            rules_rejected: Counter::default(),
            processing_latency: latency(),
            events_pending: Gauge::default(),
            events_oldest_pending: Seconds::default(),
            due_work: Gauge::default(),
            due_work_overdue: Gauge::default(),
            due_work_oldest_overdue: Seconds::default(),
            outbox_pending: Family::default(),
            outbox_oldest_pending: Family::default(),
            delivery_latency: Family::new_with_constructor(latency),
            transport_up: Family::default(),
            ready: Gauge::default(),
            emails_sent: Family::default(),
            emails_failed: Family::default(),
            emails_retried: Family::default(),
            emails_resent: Family::default(),
            emails_cancelled: Family::default(),
            emails_not_composed: Counter::default(),
            withheld: Counter::default(),
            sla_breaches: Family::default(),
            webhooks_delivered: Family::default(),
            webhook_attempts_failed: Family::default(),
            webhooks_failed: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_duration),
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
            process: Registry::default(),
        };
        registry.register(
            "build",
            "This build: its version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
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
            "Condition and plugin errors while evaluating, by kind (error) and rule or plugin",
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
            "events_oldest_pending_seconds",
            "Age of the oldest accepted event not yet applied (leads in quarantine left out); 0 when none waits",
            m.events_oldest_pending.clone(),
        );
        registry.register(
            "due_work",
            "Scheduled work items stored, future timers included",
            m.due_work.clone(),
        );
        registry.register(
            "due_work_overdue",
            "Scheduled work whose time has come and is not yet done (counted up to 100000)",
            m.due_work_overdue.clone(),
        );
        registry.register(
            "due_work_oldest_overdue_seconds",
            "How late the oldest overdue scheduled work is; 0 when none is",
            m.due_work_oldest_overdue.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows (emails, notifications, webhooks) not yet delivered or given up, by kind",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest outbox row not yet delivered, by kind; 0 when none waits",
            m.outbox_oldest_pending.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From the decision to send a message to its delivery, by kind",
            m.delivery_latency.clone(),
        );
        registry.register(
            "transport_up",
            "1 while the mail transport takes messages (the last send did not fail for now), by kind (smtp, files)",
            m.transport_up.clone(),
        );
        registry.register(
            "ready",
            "1 when /readyz answers ready (at the last check or scrape)",
            m.ready.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request durations, by method, route template and status code",
            m.http_duration.clone(),
        );
        for (name, help, c) in [
            ("emails_sent", "Emails and notifications accepted by the mail server (or written to the outbox folder)", &m.emails_sent),
            ("emails_failed", "Sends refused for good (5xx) or given up after 24 hours", &m.emails_failed),
            ("emails_retried", "Sends that failed for now and wait to be retried", &m.emails_retried),
            ("emails_resent", "Sends repeated because a crash left the first try's outcome unknown", &m.emails_resent),
            ("emails_cancelled", "Marketing emails dropped at send time (opted out or erased since)", &m.emails_cancelled),
        ] {
            registry.register(name, help, c.clone());
        }
        for (name, help, c) in [
            (
                "withheld",
                "Emails, notices and webhooks of imported history, recorded and not sent",
                &m.withheld,
            ),
            (
                "emails_not_composed",
                "Emails the engine decided on but could not render (template error, no address)",
                &m.emails_not_composed,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "sla_breaches",
            "Sales SLAs breached (no feedback in time), by owner",
            m.sla_breaches.clone(),
        );
        registry.register(
            "webhooks_delivered",
            "Webhooks delivered (2xx), by webhook",
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
        let mut process = Registry::default();
        process.register_collector(Box::new(Process));
        Metrics {
            registry,
            process,
            ..m
        }
    }

    /// Sets the backlog gauges from what the store says at `now`.
    pub fn set_backlog(&self, b: &Backlog, now: Timestamp) {
        let age = |t: Option<Timestamp>| {
            t.map_or(0.0, |t| {
                ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
            })
        };
        self.events_pending.set(b.events_pending);
        self.events_oldest_pending.set(age(b.oldest_pending_event));
        self.due_work.set(b.due_work);
        self.due_work_overdue.set(b.due_overdue);
        self.due_work_oldest_overdue.set(age(b.oldest_overdue));
        self.leads_quarantined.set(b.quarantined);
        for o in &b.outbox {
            let l = KindLabels {
                kind: o.kind.as_str().to_string(),
            };
            self.outbox_pending.get_or_create(&l).set(o.pending);
            self.outbox_oldest_pending
                .get_or_create(&l)
                .set(age(o.oldest));
        }
    }

    /// A message went out: counted, its delivery latency observed, and the
    /// transport marked up.
    pub fn mail_sent(&self, l: &MailLabels, decided: Timestamp, now: Timestamp) {
        self.emails_sent.get_or_create(l).inc();
        let secs = (now - decided).num_milliseconds() as f64 / 1000.0;
        self.delivery_latency
            .get_or_create(&KindLabels {
                kind: l.kind.clone(),
            })
            .observe(secs.max(0.0));
        self.transport_ok(&l.transport);
    }

    /// The transport took a message (or refused it for good: it answers).
    pub fn transport_ok(&self, transport: &str) {
        self.transport_up
            .get_or_create(&KindLabels {
                kind: transport.to_string(),
            })
            .set(1);
        self.health.mail_ok(transport);
    }

    /// A send failed for now: the transport is down until one succeeds.
    pub fn transport_failed(&self, transport: &str, cause: &str) {
        self.transport_up
            .get_or_create(&KindLabels {
                kind: transport.to_string(),
            })
            .set(0);
        self.health.mail_failed(transport, cause);
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

    /// A counter's total over all its label sets (`emails_failed`: every
    /// `nurture_emails_failed_total` series), for benchmarks and checks.
    pub fn total(&self, counter: &str) -> f64 {
        let name = format!("nurture_{counter}_total");
        self.encode()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum()
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
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }
}

/// This process's resources, read from /proc at each scrape (Linux; on
/// other systems nothing is reported).
#[derive(Debug)]
struct Process;

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    virtual_bytes: i64,
    resident_bytes: i64,
    start_time_seconds: f64,
    threads: i64,
}

/// Clock ticks per second and the page size, as the kernel reports them.
fn sysconf(name: libc::c_int) -> Option<i64> {
    // SAFETY: sysconf reads a system setting; no memory is passed.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as i64)
}

/// Parses /proc/self/stat (fields after the command, which may hold
/// spaces and parentheses, so the split is at the last `)`), given clock
/// ticks per second, the page size and the boot time (epoch seconds).
fn parse_stat(stat: &str, ticks: f64, page: i64, boot: f64) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5), minus the first two (pid, comm).
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) / ticks,
        threads: num(20)? as i64,
        start_time_seconds: boot + num(22)? / ticks,
        virtual_bytes: num(23)? as i64,
        resident_bytes: num(24)? as i64 * page,
    })
}

fn boot_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files.
fn max_fds() -> Option<i64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
        .then(|| i64::try_from(lim.rlim_cur).unwrap_or(i64::MAX))
}

impl prometheus_client::collector::Collector for Process {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                parse_stat(
                    &s,
                    sysconf(libc::_SC_CLK_TCK)? as f64,
                    sysconf(libc::_SC_PAGESIZE)?,
                    boot_time()?,
                )
            });
        if let Some(p) = stat {
            let c = ConstCounter::new(p.cpu_seconds);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?)?;
            for (name, help, v) in [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    p.resident_bytes,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    p.virtual_bytes,
                ),
                ("process_threads", "OS threads", p.threads),
            ] {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
            let g = ConstGauge::new(p.start_time_seconds);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let g = ConstGauge::new(dir.count() as i64);
            g.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(max) = max_fds() {
            let g = ConstGauge::new(max);
            g.encode(encoder.encode_descriptor(
                "process_max_fds",
                "The limit on open file descriptors (soft RLIMIT_NOFILE)",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A command with spaces and a parenthesis does not shift the fields.
    #[test]
    fn proc_stat_parses_past_an_odd_command_name() {
        let line = "4242 (nur ture) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 1000 104857600 2560 18446744073709551615";
        let p = parse_stat(line, 100.0, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(
            p,
            ProcStat {
                cpu_seconds: 3.0,
                virtual_bytes: 104_857_600,
                resident_bytes: 2560 * 4096,
                start_time_seconds: 1_700_000_010.0,
                threads: 7,
            }
        );
    }

    #[test]
    fn mail_labels_split_a_drip_emails_campaign_and_step() {
        let l = MailLabels::of("email", "welcome/2", "smtp");
        assert_eq!((l.campaign.as_str(), l.step.as_str()), ("welcome", "2"));
        let n = MailLabels::of("notification", "sla_breach", "files");
        assert_eq!((n.campaign.as_str(), n.step.as_str()), ("", ""));
    }

    /// Every family and the build info encode, and the text ends as
    /// OpenMetrics requires.
    #[test]
    fn the_exposition_has_build_info_process_metrics_and_one_eof() {
        let m = Metrics::default();
        m.mail_sent(
            &MailLabels::of("email", "welcome/0", "files"),
            crate::model::time::from_millis(0),
            crate::model::time::from_millis(7_200_000),
        );
        let text = m.encode();
        assert!(text.contains("nurture_build_info{version=\""), "{text}");
        assert!(text.contains("nurture_emails_sent_total{kind=\"email\",campaign=\"welcome\",step=\"0\",transport=\"files\"} 1"), "{text}");
        assert!(
            text.contains(
                "nurture_delivery_latency_seconds_bucket{le=\"7200.0\",kind=\"email\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("\nprocess_open_fds "), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert_eq!(m.total("emails_sent"), 1.0);
        assert_eq!(m.total("emails_failed"), 0.0);
        assert!(text.ends_with("# EOF\n"));
    }
}
