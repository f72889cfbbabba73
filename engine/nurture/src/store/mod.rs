//! Durable storage through sqlx: SQLite (the embedded default) or PostgreSQL,
//! chosen by the URL, with one code path for both.
//!
//! Queries are written once with `$1`-style parameters; for SQLite they run as
//! `?1` (its numbered form). Times are stored as epoch milliseconds, JSON as
//! text, so both databases read the same rows.

mod backlog;
mod export;
pub mod group_commit;
mod imports;
mod leases;
mod outbox;
mod quarantine;
mod read;
mod retention;
mod routing;
mod step;
mod timeline;
mod upgrade;

pub use backlog::{Backlog, OutboxBacklog, OVERDUE_COUNTED};
pub use export::{History, StoredEvent};
pub use group_commit::{IngestError, Ingestor, WriteObserver};
pub use imports::IMPORT_EXPIRES_MS;
pub use leases::{LeaseConn, ALIVE_MS};
pub use nurture_core::reports::OwnerFigures;
pub use nurture_core::rows::{parse_state, LeadRows};
pub use outbox::{Note, OutboxKind, OutboxRow, Outcome, Settle, Unheld};
pub use quarantine::Quarantined;
pub use read::{Funnel, LeadList, LeadSummary, StageFunnel};
pub use retention::{PruneKind, PRUNED};
pub use routing::PoolEntry;
pub use step::{
    lead_rows, DueTimer, EngineState, OtherPartition, PendingEvent, StepTx, StoredLead, TickWakes,
    Writes,
};
pub use timeline::{Place, TimelineEntry};

use crate::model::{time::Timestamp, Event};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://FILE or postgres://...")]
    Url(String),
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(transparent)]
    Unstorable(#[from] nurture_core::rows::Unstorable),
}

impl StoreError {
    /// What went wrong, in the database's own words when it gave any
    /// ("database or disk is full", "cannot execute INSERT in a read-only
    /// transaction"): what the API and the health check tell a client.
    pub fn cause(&self) -> String {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.message().to_string(),
            StoreError::Db(sqlx::Error::PoolTimedOut) => {
                "database unreachable (no connection within the timeout)".into()
            }
            StoreError::Db(sqlx::Error::Io(e)) => format!("database unreachable: {e}"),
            other => other.to_string(),
        }
    }

    /// Whether a failed write was about one lead's data rather than the
    /// database: a lead whose rows the step refused before writing them
    /// ([`StoreError::Unstorable`]), or data the database refused
    /// ([`StoreError::is_refused_data`]). Doing it again fails the same way,
    /// but without that lead the rest goes in.
    pub fn is_lead_data(&self) -> bool {
        matches!(self, StoreError::Unstorable(_)) || self.is_refused_data()
    }

    /// Whether the database refused the data itself (a value it cannot hold,
    /// a constraint), not the write: the same data will never be taken, but
    /// other data will. PostgreSQL's SQLSTATE classes 22 (data exception,
    /// e.g. a NUL in text), 23 (integrity constraint) and 54 (a limit such as
    /// an index row too large); SQLite's CONSTRAINT, TOOBIG and MISMATCH.
    /// A full disk, a read-only database or a lost connection is not.
    pub fn is_refused_data(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(e)) = self else {
            return false;
        };
        if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return matches!(pg.code().get(..2), Some("22" | "23" | "54"));
        }
        if let Some(lite) = e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            // The extended result code; its low byte is the primary one.
            use sqlx::error::DatabaseError as _;
            let code: i32 = lite.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            return matches!(
                code & 0xff,
                SQLITE_TOOBIG | SQLITE_CONSTRAINT | SQLITE_MISMATCH
            );
        }
        false
    }
}

// SQLite's primary result codes (sqlite3.h) for data it refuses.
const SQLITE_TOOBIG: i32 = 18;
const SQLITE_CONSTRAINT: i32 = 19;
const SQLITE_MISMATCH: i32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// Where writes go. SQLite: one connection of its own, so its page cache
    /// stays valid from one write to the next (a connection discards its
    /// cache whenever another one has written). PostgreSQL: `pool`.
    pub(crate) writer: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer. Writers queue here, in order, rather than in
    /// SQLite's busy handler, which sleeps in growing steps (up to 100 ms)
    /// and so starves a short writer (ingest) behind a busy one (processing).
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// How many partitions the database has (stored; set by `migrate`).
    partitions: Arc<std::sync::atomic::AtomicU32>,
}

/// Partitions a new database is made with (`--partitions`).
pub const DEFAULT_PARTITIONS: u32 = 16;

/// A write transaction; with SQLite it holds the write gate until it ends.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// Whether a pooled connection may be used: not if a transaction seems
/// still open on it. A write that fails for a full disk or an I/O error
/// makes SQLite roll the transaction back by itself; sqlx's own `ROLLBACK`
/// then fails and it counts the transaction as open for good, so the next
/// one on that connection would be a savepoint, which a failure can leave
/// open, holding the write lock ("database is locked" for everyone after).
/// Such a connection is closed instead, and a fresh one opened.
fn usable(conn: &sqlx::AnyConnection) -> bool {
    use sqlx::Connection as _;
    let usable = !conn.is_in_transaction();
    if !usable {
        tracing::warn!("a database connection was left in a failed transaction; reconnecting");
    }
    usable
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

pub use nurture_core::model::time::{from_millis, millis};

/// Up to how many rows a backlog count is exact (Store::queue_depth,
/// Store::outbox_pending).
pub const EXACT_COUNT: i64 = 1_000;

/// A backlog of `count` rows (counted up to EXACT_COUNT + 1) whose ids run
/// from `lo` to at most `hi`: exact, or above EXACT_COUNT the id range (an
/// upper bound).
pub(crate) fn depth(count: i64, lo: Option<i64>, hi: Option<i64>) -> i64 {
    match (lo, hi) {
        (Some(lo), Some(hi)) if count > EXACT_COUNT => (hi - lo + 1).max(count),
        _ => count,
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed); does not migrate.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(crate::redact::url(url)));
        };
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                let url = if url.contains("mode=") {
                    url.to_string()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let sqlite = |connections: u32| {
                    AnyPoolOptions::new()
                        .max_connections(connections)
                        .before_acquire(|conn, _| Box::pin(std::future::ready(Ok(usable(conn)))))
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                // WAL: readers never block the writer. FULL: a
                                // commit is on disk before the client hears 202.
                                conn.execute("PRAGMA journal_mode = WAL").await?;
                                conn.execute("PRAGMA synchronous = FULL").await?;
                                conn.execute("PRAGMA busy_timeout = 10000").await?;
                                conn.execute("PRAGMA foreign_keys = ON").await?;
                                // Erased data must not linger in free pages.
                                conn.execute("PRAGMA secure_delete = ON").await?;
                                Ok(())
                            })
                        })
                };
                // The writer first: it creates the file and turns WAL on.
                let writer = sqlite(1).connect(&url).await?;
                (sqlite(4).connect(&url).await?, writer)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .before_acquire(|conn, _| Box::pin(std::future::ready(Ok(usable(conn)))))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        let write_gate =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            pool,
            writer,
            backend,
            write_gate,
            partitions: Arc::default(),
        })
    }

    /// Begins a transaction that will write.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let gate = match &self.write_gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        Ok(WriteTx {
            tx: self.writer.begin().await?,
            _gate: gate,
        })
    }

    /// Brings the schema up to date; a new database gets
    /// [`DEFAULT_PARTITIONS`].
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_with(DEFAULT_PARTITIONS).await
    }

    /// Brings the schema up to date; a database without partitions yet gets
    /// `partitions` of them (one that has some keeps its number).
    pub async fn migrate_with(&self, partitions: u32) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.writer).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.writer).await?,
        }
        let count = self.ensure_partitions(partitions).await?;
        if count != partitions {
            tracing::info!(
                stored = count,
                asked = partitions,
                "the database keeps the number of partitions it was made with"
            );
        }
        let parted = self.assign_partitions().await?;
        if parted > 0 {
            tracing::info!(rows = parted, "rows stored before partitions got theirs");
        }
        let upgraded = self.upgrade_states().await?;
        if upgraded > 0 {
            tracing::info!(
                upgraded,
                "lead states upgraded: their history moved to its tables"
            );
        }
        Ok(())
    }

    /// How many partitions the database has (0 before `migrate`).
    pub fn partition_count(&self) -> u32 {
        self.partitions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The partition `lead` is applied in.
    pub fn part_of(&self, lead: &str) -> i64 {
        i64::from(nurture_core::model::partition::partition_of(
            lead,
            self.partition_count(),
        ))
    }

    /// Makes `n` partitions if there are none, each starting where the
    /// single engine_state row stood; returns how many there are.
    async fn ensure_partitions(&self, n: u32) -> Result<u32, StoreError> {
        let mut tx = self.begin_write().await?;
        let have: i64 = sqlx::query("SELECT COUNT(*) FROM partitions")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if have == 0 {
            let sql = self.sql(
                "INSERT INTO partitions (id, ticked_to, tick_after) \
                 SELECT $1, ticked_to, tick_after FROM engine_state WHERE id = 1 \
                 ON CONFLICT (id) DO NOTHING",
            );
            for id in 0..i64::from(n.max(1)) {
                sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        let have: i64 = sqlx::query("SELECT COUNT(*) FROM partitions")
            .fetch_one(&self.writer)
            .await?
            .try_get(0)?;
        let have = u32::try_from(have).unwrap_or(u32::MAX).max(1);
        self.partitions
            .store(have, std::sync::atomic::Ordering::Relaxed);
        Ok(have)
    }

    /// The query in this backend's parameter style. For SQLite, parameters
    /// used once each and in order become plain `?`: sqlx looks a numbered
    /// one up by name for every bind, which is quadratic in a bulk insert.
    pub(crate) fn sql<'q>(&self, q: &'q str) -> Cow<'q, str> {
        match self.backend {
            Backend::Postgres => Cow::Borrowed(q),
            Backend::Sqlite => {
                let numbers: Vec<usize> = q
                    .split('$')
                    .skip(1)
                    .map(|rest| {
                        rest.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                            .parse()
                            .unwrap_or(0)
                    })
                    .collect();
                let in_order = numbers.iter().enumerate().all(|(i, n)| *n == i + 1);
                if !in_order {
                    return Cow::Owned(q.replace('$', "?"));
                }
                let mut out = String::with_capacity(q.len());
                let mut chars = q.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '$' {
                        out.push('?');
                        while chars.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        }
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// Appends events to the log in one transaction; ids seen before are
    /// acknowledged and skipped. Returns how many were new.
    pub async fn insert_events(
        &self,
        events: &[Event],
        received_at: Timestamp,
    ) -> Result<u64, StoreError> {
        Ok(self
            .insert_event_groups(&[(events, received_at)])
            .await?
            .into_iter()
            .sum())
    }

    /// Appends several requests' events in one transaction (group commit):
    /// one disk flush for all. Returns how many of each group were new; a
    /// duplicate of an id earlier in the same transaction counts as seen.
    pub async fn insert_event_groups(
        &self,
        groups: &[(&[Event], Timestamp)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut counts = Vec::with_capacity(groups.len());
        for (events, received_at) in groups {
            counts.push(self.insert_events_in(&mut tx, events, *received_at).await?);
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Appends events within a transaction (ids seen before are skipped);
    /// returns how many were new.
    pub(crate) async fn insert_events_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[Event],
        received_at: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        // Keep each statement well under both databases' parameter limits.
        for chunk in events.chunks(300) {
            let mut q = String::from(
                "INSERT INTO events (id, lead, type, at, payload, received_at, part) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 7;
                if i > 0 {
                    q.push(',');
                }
                q.push_str(&format!(
                    "(${},${},${},${},${},${},${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                ));
            }
            q.push_str(" ON CONFLICT (id) DO NOTHING");
            let sql = self.sql(&q);
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.id.clone())
                    .bind(e.lead.clone())
                    .bind(e.kind.clone())
                    .bind(millis(&e.at))
                    .bind(e.to_json().to_string())
                    .bind(millis(&received_at))
                    .bind(self.part_of(&e.lead));
            }
            inserted += query.execute(&mut *conn).await?.rows_affected();
        }
        Ok(inserted)
    }

    /// Events not yet applied and scheduled work waiting, for `/healthz`
    /// and the gauges: exact up to [`EXACT_COUNT`] each; above that an
    /// estimate from the ids (an upper bound), so that a health check polled
    /// many times a second costs a few index lookups however much waits
    /// (counting up to 100,000 pending rows on each of the bench's polls
    /// took a fifth of PostgreSQL's time, docs/benchmarks.md).
    pub async fn queue_depth(&self) -> Result<(i64, i64), StoreError> {
        let row: AnyRow = sqlx::query(&format!(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE processed_at IS NULL LIMIT {over}) p), \
                    (SELECT MIN(seq) FROM events WHERE processed_at IS NULL), (SELECT MAX(seq) FROM events), \
                    (SELECT COUNT(*) FROM (SELECT 1 FROM due_work LIMIT {over}) d), \
                    (SELECT MIN(seq) FROM due_work), (SELECT MAX(seq) FROM due_work)",
            over = EXACT_COUNT + 1
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok((
            depth(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
            depth(row.try_get(3)?, row.try_get(4)?, row.try_get(5)?),
        ))
    }

    /// A value generated once and kept: the stored one if there is one,
    /// else `generated`, stored (the first of racing processes wins).
    pub async fn setting_or_init(&self, name: &str, generated: &str) -> Result<String, StoreError> {
        let sql = self.sql(
            "INSERT INTO daemon_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        );
        sqlx::query(&sql)
            .bind(name.to_string())
            .bind(generated.to_string())
            .execute(&self.writer)
            .await?;
        let sql = self.sql("SELECT value FROM daemon_settings WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Whether the database takes writes now: a one-row write, committed.
    /// The health check runs it after a write failed, to see the database
    /// come back even when no other write is under way.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE engine_state SET id = id WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest migration applied (the schema's version; 0 before any).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row: AnyRow =
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_exact_up_to_the_cap_and_an_upper_bound_above() {
        assert_eq!(depth(0, None, None), 0);
        assert_eq!(depth(7, Some(100), Some(5_000)), 7);
        assert_eq!(depth(EXACT_COUNT, Some(1), Some(90_000)), EXACT_COUNT);
        // Counted past the cap: the ids from the lowest waiting to the last.
        assert_eq!(depth(EXACT_COUNT + 1, Some(10_001), Some(90_000)), 80_000);
        assert_eq!(depth(EXACT_COUNT + 1, Some(5), Some(5)), EXACT_COUNT + 1);
    }
}
