//! Which partitions this daemon's workers may step, and which one each
//! takes next. A partition is stepped by at most one worker at a time (it is
//! `busy` meanwhile), so its events are applied in order; the partitions
//! held are all of them on SQLite, or those this daemon leases on
//! PostgreSQL (daemon/leases.rs). Ingest marks the partitions of new events
//! `dirty` and wakes a worker, which takes a dirty partition first; idle
//! workers otherwise go round every held partition every quarter second, for
//! due work and `schedule` ticks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::Notify;

pub struct Partitions {
    inner: Mutex<Inner>,
    wake: Notify,
}

#[derive(Default)]
struct Inner {
    /// The partitions this daemon may step, in order.
    held: Vec<i64>,
    /// Being stepped by a worker now.
    busy: BTreeSet<i64>,
    /// With new work since last stepped, oldest first (first come, first
    /// stepped: no partition starves behind busier ones).
    dirty: VecDeque<i64>,
    /// Where the round over `held` goes on.
    next: usize,
    /// Steps in a row that found nothing to do, all workers together.
    empty: usize,
    /// Each partition's step size (grown under a backlog).
    batch: HashMap<i64, i64>,
}

/// A partition taken by a worker: busy until dropped.
pub struct Claim<'p> {
    partitions: &'p Partitions,
    pub part: i64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.partitions.lock().busy.remove(&self.part);
    }
}

impl Partitions {
    /// Holding `held` (e.g. all of them).
    pub fn new(held: Vec<i64>) -> Partitions {
        Partitions {
            inner: Mutex::new(Inner {
                held,
                ..Inner::default()
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A worker that panicked while holding the lock left nothing half
        // done that matters: the sets are advisory.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn held(&self) -> Vec<i64> {
        self.lock().held.clone()
    }

    /// Now holding `held` (leases changed).
    pub fn set_held(&self, held: Vec<i64>) {
        let mut inner = self.lock();
        inner.held = held;
        inner.empty = 0;
        drop(inner);
        self.wake.notify_one();
    }

    /// Whether a worker is stepping `part` now.
    pub fn is_busy(&self, part: i64) -> bool {
        self.lock().busy.contains(&part)
    }

    /// New work in `parts`: a worker takes them first.
    pub fn touch(&self, parts: impl IntoIterator<Item = i64>) {
        let mut inner = self.lock();
        for p in parts {
            if !inner.dirty.contains(&p) {
                inner.dirty.push_back(p);
            }
        }
        inner.empty = 0;
        drop(inner);
        self.wake.notify_one();
    }

    /// The next partition to step: a dirty one if any, else the next held
    /// one in the round; `None` if every held one is busy.
    pub fn claim(&self) -> Option<Claim<'_>> {
        let mut inner = self.lock();
        let Inner {
            held,
            busy,
            dirty,
            next,
            ..
        } = &mut *inner;
        // Dirty partitions no longer held are forgotten.
        dirty.retain(|p| held.contains(p));
        let dirty_one = dirty.iter().copied().find(|p| !busy.contains(p));
        let part = match dirty_one {
            Some(p) => p,
            None => {
                let n = held.len();
                let found = (0..n)
                    .map(|i| held[(*next + i) % n])
                    .position(|p| !busy.contains(&p))?;
                let p = held[(*next + found) % n];
                *next = (*next + found + 1) % n.max(1);
                p
            }
        };
        dirty.retain(|p| *p != part);
        busy.insert(part);
        let more = dirty.iter().any(|p| !busy.contains(p) && held.contains(p));
        drop(inner);
        if more {
            // Another worker may take the next dirty one.
            self.wake.notify_one();
        }
        Some(Claim {
            partitions: self,
            part,
        })
    }

    /// The step size for `part`, starting at `start`.
    pub fn batch(&self, part: i64, start: i64) -> i64 {
        *self.lock().batch.entry(part).or_insert(start)
    }

    pub fn set_batch(&self, part: i64, batch: i64) {
        self.lock().batch.insert(part, batch);
    }

    /// Counts a step's outcome; true when every held partition has come up
    /// empty since work was last found (the workers may rest).
    pub fn stepped(&self, found_work: bool) -> bool {
        let mut inner = self.lock();
        if found_work {
            inner.empty = 0;
            return false;
        }
        inner.empty += 1;
        inner.empty >= inner.held.len().max(1)
    }

    /// Waits for new work or `timeout`; the next round starts afresh.
    pub async fn rest(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
        self.lock().empty = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_claimed_by_one_worker_at_a_time() {
        let p = Partitions::new(vec![0, 1]);
        let a = p.claim().expect("one free");
        let b = p.claim().expect("the other free");
        assert_ne!(a.part, b.part);
        assert!(p.claim().is_none(), "both busy");
        let freed = a.part;
        drop(a);
        assert_eq!(p.claim().map(|c| c.part), Some(freed));
    }

    #[test]
    fn dirty_partitions_come_first_and_only_held_ones() {
        let p = Partitions::new(vec![0, 1, 2, 3]);
        p.touch([2, 9]);
        assert_eq!(p.claim().map(|c| c.part), Some(2));
        // 9 is not held: the round goes on from the start.
        assert_eq!(p.claim().map(|c| c.part), Some(0));
        p.set_held(vec![3]);
        assert_eq!(p.claim().map(|c| c.part), Some(3));
    }

    #[test]
    fn workers_rest_once_every_held_partition_came_up_empty() {
        let p = Partitions::new(vec![0, 1, 2]);
        assert!(!p.stepped(false));
        assert!(!p.stepped(false));
        assert!(!p.stepped(true), "work found: the count starts again");
        assert!(!p.stepped(false));
        assert!(!p.stepped(false));
        assert!(p.stepped(false));
    }
}
