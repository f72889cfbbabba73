//! Group commit for ingestion: concurrent requests are written together in
//! one transaction, so many small POSTs share one disk flush. A request is
//! answered only after the transaction holding its events committed.

use crate::model::{time::Timestamp, Event};
use crate::store::Store;
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
    pub fn start(store: Store) -> Ingestor {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(committer(store, rx));
        Ingestor { tx }
    }

    /// Stores `events` durably; returns how many were new.
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

async fn committer(store: Store, mut rx: mpsc::Receiver<Job>) {
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
                for (job, n) in jobs.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(n));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing events failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
