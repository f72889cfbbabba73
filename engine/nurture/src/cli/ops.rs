//! Operators' commands on a daemon's database: `nurture prune` (retention,
//! once) and `nurture outbox hold|release|cancel|status` (after a restore).
//! Both connect without migrating, and work while a daemon runs.

use crate::daemon::pruner::{self, Retention};
use crate::model::time;
use crate::rules::config::DurationSpec;
use crate::store::{PruneKind, Store};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// How long a kind is kept: a duration (`90d`, `12h`), or `never` to keep
/// it for ever.
#[derive(Debug, Clone, Copy)]
pub struct Keep(pub Option<Duration>);

impl FromStr for Keep {
    type Err = String;
    fn from_str(s: &str) -> Result<Keep, String> {
        match s.trim() {
            "never" | "forever" | "off" => Ok(Keep(None)),
            t => {
                let d = DurationSpec::from_str(t)?;
                let d = d.0.to_std().unwrap_or(Duration::ZERO);
                if d.is_zero() {
                    return Err(format!(
                        "{s:?}: a retention must be longer than 0 (or `never` to keep for ever)"
                    ));
                }
                Ok(Keep(Some(d)))
            }
        }
    }
}

/// The retention settings `serve` and `prune` share.
#[derive(clap::Args, Debug, Clone)]
pub struct RetentionArgs {
    /// How long an applied event keeps its payload (after it was received;
    /// never less than --allowed-lateness); its row, id and type stay.
    #[arg(long, env = "NURTURE_RETAIN_EVENT_PAYLOADS", default_value = pruner::DEFAULT_EVENT_PAYLOADS)]
    retain_event_payloads: Keep,
    /// How long timeline entries (notes, messages, webhooks, outcomes) are
    /// kept, by their time.
    #[arg(long, env = "NURTURE_RETAIN_TIMELINE", default_value = pruner::DEFAULT_TIMELINE)]
    retain_timeline: Keep,
    /// How long a message no longer pending (sent, failed, cancelled,
    /// withheld) keeps its body; its row and Message-ID stay.
    #[arg(long, env = "NURTURE_RETAIN_OUTBOX_BODIES", default_value = pruner::DEFAULT_OUTBOX_BODIES)]
    retain_outbox_bodies: Keep,
    /// How long ledger rows (points per rule, event and reason) are kept,
    /// by their time; the score and its breakdown stay.
    #[arg(long, env = "NURTURE_RETAIN_LEDGER", default_value = pruner::DEFAULT_LEDGER)]
    retain_ledger: Keep,
    /// Rows pruned per statement (each its own short transaction).
    #[arg(long, env = "NURTURE_PRUNE_BATCH", default_value_t = pruner::BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    prune_batch: i64,
}

impl RetentionArgs {
    pub fn settings(&self, allowed_lateness: Duration) -> Retention {
        Retention {
            event_payloads: self.retain_event_payloads.0,
            timeline: self.retain_timeline.0,
            outbox_bodies: self.retain_outbox_bodies.0,
            ledger: self.retain_ledger.0,
            allowed_lateness,
            batch: self.prune_batch,
        }
    }
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[arg(
        long,
        env = "NURTURE_DATABASE_URL",
        default_value = "sqlite://nurture.db"
    )]
    database_url: String,
    #[command(flatten)]
    retention: RetentionArgs,
    /// The daemon's --allowed-lateness: events younger than it keep their
    /// payloads whatever --retain-event-payloads says.
    #[arg(long, env = "NURTURE_ALLOWED_LATENESS", default_value = "1h")]
    allowed_lateness: DurationSpec,
    /// Count what would be pruned; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune as of this time instead of now (RFC 3339, or a date): e.g.
    /// `--dry-run --as-of 2027-01-01` tells what will be pruned by then.
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
}

fn what(kind: PruneKind) -> &'static str {
    match kind {
        PruneKind::EventPayloads => "event payloads",
        PruneKind::Timeline => "timeline entries",
        PruneKind::OutboxBodies => "outbox bodies",
        PruneKind::Ledger => "ledger rows",
    }
}

/// `nurture prune`: exit 0, or 2 for bad input or a database error.
pub fn prune(a: PruneArgs) -> ExitCode {
    let now = match a.as_of.as_deref().map(time::parse_time_or_date) {
        None => chrono::Utc::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("--as-of: not a date (2027-01-01) or an RFC 3339 time: {e}");
            return ExitCode::from(2);
        }
    };
    let retention = a
        .retention
        .settings(a.allowed_lateness.0.to_std().unwrap_or(Duration::ZERO));
    let result = super::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let store = Store::connect(&a.database_url).await?;
                let started = std::time::Instant::now();
                let done = pruner::pass(
                    &store,
                    &retention,
                    now.timestamp_millis(),
                    a.dry_run,
                    None,
                    &mut |_, _| {},
                )
                .await?;
                anyhow::Ok((done, started.elapsed()))
            })
        });
    match result {
        Ok((done, took)) => {
            for kind in PruneKind::ALL {
                match done.iter().find(|p| p.kind == kind) {
                    None => println!("{}: kept for ever", what(kind)),
                    Some(p) => {
                        let verb = match (a.dry_run, kind.deletes()) {
                            (true, _) => "would prune",
                            (false, true) => "deleted",
                            (false, false) => "pruned",
                        };
                        println!(
                            "{}: {verb} {} (older than {})",
                            what(kind),
                            p.rows,
                            time::format(&crate::store::from_millis(p.before))
                        );
                    }
                }
            }
            if !a.dry_run {
                println!("took {:.1} s", took.as_secs_f64());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nurture prune: {}", crate::redact::text(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// Hold the outbox: nothing pending (emails, notices, webhooks) is sent
    /// until `release` or `cancel`. Run it on a restored database before
    /// starting the daemon (or start it with `serve --hold-outbox`).
    Hold(OutboxDb),
    /// Lift the hold: everything still pending is sent.
    Release(OutboxDb),
    /// Cancel everything still pending (it is never sent; each gets a
    /// `email_cancelled` timeline entry) and lift the hold.
    Cancel(OutboxDb),
    /// Whether the outbox is held, and how many messages wait.
    Status(OutboxDb),
}

#[derive(clap::Args)]
pub struct OutboxDb {
    #[arg(
        long,
        env = "NURTURE_DATABASE_URL",
        default_value = "sqlite://nurture.db"
    )]
    database_url: String,
}

/// `nurture outbox ...`: exit 0, or 2 for a database error.
pub fn outbox(c: OutboxCommand) -> ExitCode {
    let result = super::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let url = match &c {
                    OutboxCommand::Hold(d)
                    | OutboxCommand::Release(d)
                    | OutboxCommand::Cancel(d)
                    | OutboxCommand::Status(d) => &d.database_url,
                };
                let store = Store::connect(url).await?;
                let now = chrono::Utc::now();
                let line = match c {
                    OutboxCommand::Hold(_) => {
                        let already = store.hold_outbox(now).await?;
                        let since = store.outbox_hold().await?.unwrap_or_default();
                        format!(
                            "outbox {}held since {since}: nothing pending is sent until `nurture outbox release` or `cancel`",
                            if already { "already " } else { "" }
                        )
                    }
                    OutboxCommand::Release(_) => {
                        let r = store.release_outbox().await?;
                        format!(
                            "outbox {}: {} message{} pending, sent from the daemon's next poll",
                            if r.was_held { "released" } else { "was not held" },
                            r.rows,
                            if r.rows == 1 { "" } else { "s" }
                        )
                    }
                    OutboxCommand::Cancel(_) => {
                        let r = store.cancel_outbox(now).await?;
                        format!(
                            "cancelled {} pending message{}; the outbox {}",
                            r.rows,
                            if r.rows == 1 { "" } else { "s" },
                            if r.was_held { "is released" } else { "was not held" }
                        )
                    }
                    OutboxCommand::Status(_) => {
                        let pending = store.outbox_pending().await?;
                        match store.outbox_hold().await? {
                            Some(since) => format!("outbox held since {since}; {pending} message(s) pending"),
                            None => format!("outbox not held; {pending} message(s) pending"),
                        }
                    }
                };
                anyhow::Ok(line)
            })
        });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nurture outbox: {}", crate::redact::text(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
