//! Retention's pruner: every `--prune-every` the daemon prunes what is
//! older than its setting (store/retention.rs), a batch per transaction,
//! pausing between batches as long as the batch took, so that ingest and
//! the processor keep at least half of the writer (SQLite's one lock) while
//! a large history is pruned. `nurture prune` runs the same pass once.

use super::metrics::Metrics;
use crate::clock::Clock;
use crate::store::{PruneKind, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long each kind is kept (`None`: for ever), and how the pruner runs.
#[derive(Debug, Clone)]
pub struct Retention {
    pub event_payloads: Option<Duration>,
    pub timeline: Option<Duration>,
    pub outbox_bodies: Option<Duration>,
    pub ledger: Option<Duration>,
    /// Events younger than this are never pruned, whatever
    /// `event_payloads` says: a late event within it re-folds its lead
    /// from its stored events (`--allowed-lateness`).
    pub allowed_lateness: Duration,
    /// Rows per statement.
    pub batch: i64,
}

/// Rows per statement by default.
pub const BATCH: i64 = 1_000;

/// The defaults, as `serve` and `prune` document them: a quarter of event
/// payloads, a month of message bodies, a year of timeline and ledger.
pub const DEFAULT_EVENT_PAYLOADS: &str = "90d";
pub const DEFAULT_TIMELINE: &str = "365d";
pub const DEFAULT_OUTBOX_BODIES: &str = "30d";
pub const DEFAULT_LEDGER: &str = "365d";

impl Default for Retention {
    fn default() -> Self {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        Retention {
            event_payloads: days(90),
            timeline: days(365),
            outbox_bodies: days(30),
            ledger: days(365),
            allowed_lateness: Duration::from_secs(3600),
            batch: BATCH,
        }
    }
}

impl Retention {
    /// The cut-off of each kind kept for a limited time, as of `now` (ms):
    /// rows older than it are pruned.
    pub fn cutoffs(&self, now: i64) -> Vec<(PruneKind, i64)> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        PruneKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let keep = match kind {
                    PruneKind::EventPayloads => {
                        self.event_payloads.map(|d| d.max(self.allowed_lateness))
                    }
                    PruneKind::Timeline => self.timeline,
                    PruneKind::OutboxBodies => self.outbox_bodies,
                    PruneKind::Ledger => self.ledger,
                }?;
                Some((kind, now.saturating_sub(ms(keep))))
            })
            .collect()
    }
}

/// What one pass did (or, dry, would do) for one kind.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub kind: PruneKind,
    /// Rows older than this (ms) were taken.
    pub before: i64,
    pub rows: u64,
}

/// One pass over every kind as of `now` (ms). Dry: counts only. `stop`
/// ends it between batches; `on_batch` hears each batch's rows.
pub async fn pass(
    store: &Store,
    retention: &Retention,
    now: i64,
    dry_run: bool,
    stop: Option<&watch::Receiver<bool>>,
    on_batch: &mut (dyn FnMut(PruneKind, u64) + Send),
) -> Result<Vec<Pruned>, StoreError> {
    let mut out = Vec::new();
    for (kind, before) in retention.cutoffs(now) {
        if dry_run {
            let rows = store.prunable(kind, before).await?;
            out.push(Pruned { kind, before, rows });
            continue;
        }
        let mut rows = 0;
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                break;
            }
            let started = Instant::now();
            let n = store
                .prune_batch(kind, before, now, retention.batch.max(1))
                .await?;
            rows += n;
            on_batch(kind, n);
            if n < retention.batch.max(1) as u64 {
                break;
            }
            // As long as the batch took: the writer is at least half free.
            tokio::time::sleep(started.elapsed().max(Duration::from_millis(1))).await;
        }
        out.push(Pruned { kind, before, rows });
    }
    Ok(out)
}

/// The daemon's pruner: a pass at start, then every `every`, until stopped.
/// A failed pass is logged and tried again at the next turn.
pub async fn run(
    store: Store,
    retention: Retention,
    every: Duration,
    clock: Clock,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now().timestamp_millis();
        let counted = metrics.clone();
        let mut count = move |kind: PruneKind, n: u64| {
            counted.pruned(kind).inc_by(n);
        };
        match pass(&store, &retention, now, false, Some(&stop), &mut count).await {
            Ok(done) => {
                for p in done.iter().filter(|p| p.rows > 0) {
                    tracing::info!(kind = p.kind.as_str(), rows = p.rows, "pruned");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning failed; tried again at the next turn"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
