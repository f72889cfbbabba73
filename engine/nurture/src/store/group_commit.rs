//! Group commit for ingestion: concurrent requests are written together in
//! one transaction, so many small POSTs share one disk flush. A request is
//! answered only after the transaction holding its events committed.
//!
//! One request's events must not fail the others': when the database refuses
//! a group's data (not the write as such), the group is split in halves and
//! each half tried again, down to the request at fault, which alone is
//! refused (400). A database that takes no writes (full, read-only, gone)
//! fails every request of the group with 503, without splitting.
//!
//! How each write went is told to a [`WriteObserver`] (the daemon's metrics
//! and health), so the store needs nothing from above it.

use super::{Store, StoreError};
use crate::model::{time::Timestamp, Event};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most events written in one group.
const GROUP_EVENTS: usize = 5_000;

/// Why a request's events were not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The database refused this request's data (and took the others'):
    /// sending it again cannot succeed.
    #[error("events refused by the database: {0}")]
    Refused(String),
    /// The database took no writes ("database or disk is full"): retry later.
    #[error("events not stored: {0}; retry later")]
    Unavailable(String),
}

/// Told how each group's write went.
pub trait WriteObserver: Send + Sync + 'static {
    /// A group was committed: the database takes writes.
    fn written(&self);
    /// The database took no writes, for `cause` ("database or disk is full").
    fn failed(&self, cause: String);
}

struct Job {
    events: Vec<Event>,
    received_at: Timestamp,
    reply: oneshot::Sender<Result<u64, IngestError>>,
}

#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the committer task.
    pub fn start(store: Store, observer: Arc<dyn WriteObserver>) -> Ingestor {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(committer(store, observer, rx));
        Ingestor { tx }
    }

    /// Stores `events` durably; returns how many were new, or why they
    /// were not stored (with the database's words: "database or disk is full").
    pub async fn submit(
        &self,
        events: Vec<Event>,
        received_at: Timestamp,
    ) -> Result<u64, IngestError> {
        let gone = || IngestError::Unavailable("shutting down".to_string());
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                events,
                received_at,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn committer(store: Store, observer: Arc<dyn WriteObserver>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.events.len();
        let mut jobs = vec![first];
        // Whatever else is already waiting joins this transaction.
        while size < GROUP_EVENTS {
            match rx.try_recv() {
                Ok(j) => {
                    size += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        commit(&store, observer.as_ref(), jobs).await;
    }
}

/// Writes the jobs' events and answers each job. A group the database
/// refuses for its data is split and retried, so only the job at fault is
/// refused: with k bad jobs among n, about 2·k·log2(n) more transactions.
async fn commit(store: &Store, observer: &dyn WriteObserver, jobs: Vec<Job>) {
    // Groups still to write, the next on top; each half keeps arrival order.
    let mut todo = vec![jobs];
    while let Some(mut group) = todo.pop() {
        let events: Vec<(&[Event], Timestamp)> = group
            .iter()
            .map(|j| (j.events.as_slice(), j.received_at))
            .collect();
        let e = match store.insert_event_groups(&events).await {
            Ok(counts) => {
                observer.written();
                for (job, n) in group.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(n));
                }
                continue;
            }
            Err(e) => e,
        };
        if !e.is_refused_data() {
            // Nothing of this is acknowledged: every request still waiting
            // gets the cause and retries.
            let cause = e.cause();
            // At debug: the observer logs the outage once (daemon/health.rs).
            tracing::debug!(error = %e, "storing events failed; refused with 503: {cause}");
            observer.failed(cause.clone());
            let err = IngestError::Unavailable(cause);
            for job in group.into_iter().chain(todo.drain(..).flatten()) {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
        if group.len() > 1 {
            let second = group.split_off(group.len() / 2);
            todo.push(second);
            todo.push(group);
            continue;
        }
        refuse(group, &e);
    }
}

fn refuse(group: Vec<Job>, e: &StoreError) {
    let cause = e.cause();
    tracing::warn!(error = %e, "events refused by the database (400): {cause}");
    for job in group {
        let _ = job.reply.send(Err(IngestError::Refused(cause.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time;
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts the failed writes it is told of.
    #[derive(Default)]
    struct Failures(AtomicU64);

    impl WriteObserver for Failures {
        fn written(&self) {}
        fn failed(&self, _: String) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn event(id: &str, lead: &str) -> Event {
        Event::from_json(
            &json!({"id": id, "lead": lead, "type": "x", "at": "2026-01-01T00:00:00Z"}),
            None,
        )
        .unwrap()
    }

    fn job(events: Vec<Event>) -> (Job, oneshot::Receiver<Result<u64, IngestError>>) {
        let (reply, answer) = oneshot::channel();
        let received_at = time::parse("2026-01-01T00:00:00Z").unwrap();
        let job = Job {
            events,
            received_at,
            reply,
        };
        (job, answer)
    }

    async fn store(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn stored_ids(store: &Store) -> Vec<String> {
        use sqlx::Row as _;
        sqlx::query("SELECT id FROM events ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Issue 14: one request the database refuses (past validation: here a
    /// trigger) failed every request sharing its transaction.
    #[tokio::test]
    async fn a_job_the_database_refuses_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.lead = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'lead refused'); END",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for (i, lead) in ["a", "b", "refused", "c", "d"].into_iter().enumerate() {
            let (j, a) = job(vec![
                event(&format!("e{i}"), lead),
                event(&format!("f{i}"), lead),
            ]);
            jobs.push(j);
            answers.push(a);
        }
        commit(&store, &Failures::default(), jobs).await;
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap());
        }
        let refused = IngestError::Refused("lead refused".into());
        assert_eq!(got, vec![Ok(2), Ok(2), Err(refused), Ok(2), Ok(2)]);
        assert_eq!(
            stored_ids(&store).await,
            ["e0", "f0", "e1", "f1", "e3", "f3", "e4", "f4"]
        );
    }

    /// A database that takes no writes fails every request with the cause,
    /// as retryable, and is not split job by job.
    #[tokio::test]
    async fn a_full_database_fails_every_job_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        // No page beyond those in use: the next insert finds the disk full.
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(&store.writer)
            .await
            .unwrap();
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for i in 0..3 {
            let big: Vec<Event> = (0..50)
                .map(|n| event(&format!("e{i}-{n}"), &"x".repeat(500)))
                .collect();
            let (j, a) = job(big);
            jobs.push(j);
            answers.push(a);
        }
        let failures = Failures::default();
        commit(&store, &failures, jobs).await;
        for a in answers {
            let got = a.await.unwrap();
            assert!(
                matches!(&got, Err(IngestError::Unavailable(c)) if c.contains("full")),
                "{got:?}"
            );
        }
        assert_eq!(
            failures.0.load(Ordering::Relaxed),
            1,
            "one try, not one per job"
        );
    }
}
