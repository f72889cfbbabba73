//! Shares the partitions out among the daemons on one PostgreSQL database.
//! Every second each daemon says it is alive, counts the daemons alive,
//! and holds its fair share of the partitions: the i-th of n daemons (in id
//! order) holds `count / n`, one more if `i < count % n`. It takes free
//! partitions until it has its share (starting at a place of its own, so
//! daemons do not all reach for the same ones) and gives up the ones over
//! it. A daemon that dies loses its leases with its connection; once its
//! heartbeat is older than `ALIVE_MS` the others' shares grow and they take
//! its partitions over (within about 4 s). A lease lost for a while (a cut
//! connection) costs only repeated work: a step commits only if its
//! partition's version is unchanged (store/step.rs).

use super::partitions::Partitions;
use crate::store::{LeaseConn, Store};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often leases are renewed and rebalanced.
const ROUND: Duration = Duration::from_secs(1);

/// How many partitions the `index`-th of `alive` daemons holds.
pub fn share(count: u32, alive: usize, index: usize) -> usize {
    let (count, alive) = (count as usize, alive.max(1));
    count / alive + usize::from(index < count % alive)
}

/// Keeps this daemon's share of leases until `stop`; then leaves.
pub async fn run(
    store: Store,
    parts: Arc<Partitions>,
    daemon: String,
    mut stop: watch::Receiver<bool>,
) {
    let count = store.partition_count();
    let mut conn: Option<LeaseConn> = None;
    let mut held: BTreeSet<i64> = BTreeSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        match round(&store, &mut conn, &daemon, count, &mut held, &parts).await {
            Ok(()) => {}
            Err(e) => {
                // The connection, and with it every lease, is gone.
                tracing::warn!(error = %e.cause(), "partition leases lost; reconnecting");
                conn = None;
                held.clear();
                parts.set_held(Vec::new());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.changed() => {}
        }
    }
    parts.set_held(Vec::new());
    if let Some(c) = conn {
        if let Err(e) = c.leave(&daemon).await {
            tracing::debug!(error = %e.cause(), "leaving the partition leases");
        }
    }
}

async fn round(
    store: &Store,
    conn: &mut Option<LeaseConn>,
    daemon: &str,
    count: u32,
    held: &mut BTreeSet<i64>,
    parts: &Partitions,
) -> Result<(), crate::store::StoreError> {
    if conn.is_none() {
        *conn = store.lease_connection().await?;
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let alive = c.heartbeat(daemon).await?;
    let index = alive.iter().position(|d| d == daemon).unwrap_or(0);
    let want = share(count, alive.len(), index);
    let before = held.clone();
    if held.len() > want {
        // Give up the last ones; a busy one at the next round.
        let extra: Vec<i64> = held.iter().rev().copied().take(held.len() - want).collect();
        for p in extra {
            if !parts.is_busy(p) {
                c.unlock(p).await?;
                held.remove(&p);
            }
        }
    } else if held.len() < want {
        let n = i64::from(count.max(1));
        let start = (index as i64 * n) / alive.len().max(1) as i64;
        for i in 0..n {
            if held.len() >= want {
                break;
            }
            let p = (start + i) % n;
            if !held.contains(&p) && c.try_lock(p).await? {
                held.insert(p);
            }
        }
    }
    if *held != before {
        tracing::info!(
            daemons = alive.len(),
            partitions = ?held,
            "partition leases"
        );
    }
    // Those over the share stay held until no worker is on them, but no
    // new step takes them.
    parts.set_held(held.iter().copied().take(want).collect());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_every_partition() {
        for alive in 1..=7 {
            let total: usize = (0..alive).map(|i| share(16, alive, i)).sum();
            assert_eq!(total, 16, "{alive} daemons");
        }
        assert_eq!(share(16, 3, 0), 6);
        assert_eq!(share(16, 3, 2), 5);
        assert_eq!(share(16, 0, 0), 16);
    }
}
