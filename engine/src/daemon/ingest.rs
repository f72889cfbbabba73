//! Group commit for ingestion: concurrent requests are written together in
//! one transaction, so many small POSTs share one disk flush. A request is
//! answered only after the transaction holding its events committed.

use super::metrics::Metrics;
use crate::model::{time::Timestamp, Event};
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most events written in one group.
const GROUP_EVENTS: usize = 5_000;

struct Job {
    events: Vec<Event>,
    received_at: Timestamp,
    reply: oneshot::Sender<Result<u64, String>>,
}

#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the committer task.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Ingestor {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(committer(store, metrics, rx));
        Ingestor { tx }
    }

    /// Stores `events` durably; returns how many were new, or why they
    /// were not stored (the database's words: "database or disk is full").
    pub async fn submit(&self, events: Vec<Event>, received_at: Timestamp) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                events,
                received_at,
                reply,
            })
            .await
            .map_err(|_| "shutting down".to_string())?;
        answer.await.map_err(|_| "shutting down".to_string())?
    }
}

async fn committer(store: Store, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Job>) {
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
        let groups: Vec<(&[Event], Timestamp)> = jobs
            .iter()
            .map(|j| (j.events.as_slice(), j.received_at))
            .collect();
        match store.insert_event_groups(&groups).await {
            Ok(counts) => {
                metrics.storage_ok();
                for (job, n) in jobs.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(n));
                }
            }
            Err(e) => {
                // Nothing of this group is acknowledged: its requests get
                // the cause and retry.
                let cause = e.cause();
                tracing::error!(error = %e, "storing events failed; refused with 503: {cause}");
                metrics.storage_failed(cause.clone());
                for job in jobs {
                    let _ = job.reply.send(Err(cause.clone()));
                }
            }
        }
    }
}
