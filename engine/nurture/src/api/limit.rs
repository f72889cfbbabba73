//! The rate limit on failed authentications, per client address: a token
//! bucket of `per_minute` failures that refills evenly over a minute. An
//! address that has spent it gets 429 with `Retry-After` on every
//! authenticated route, with or without the right credential, until a
//! token is back: guessing tokens or write keys stays slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses remembered at most; full buckets are forgotten first.
const MAX_ADDRESSES: usize = 100_000;

pub struct AuthFailures {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AuthFailures {
    /// `per_minute` 0: no limit.
    pub fn new(per_minute: u32) -> Self {
        AuthFailures {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
    }

    /// Seconds until `ip` may try again, when it has spent its failures.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        if self.per_minute == 0 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get_mut(&ip)?;
        self.refill(b, now);
        if b.tokens >= 1.0 {
            return None;
        }
        let rate = f64::from(self.per_minute) / 60.0;
        Some(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
    }

    /// `ip` failed to authenticate.
    pub fn failed(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let cap = f64::from(self.per_minute);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            for b in map.values_mut() {
                self.refill(b, now);
            }
            map.retain(|_, b| b.tokens < cap);
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_only_that_address() {
        let l = AuthFailures::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.blocked(a), None);
            l.failed(a);
        }
        let wait = l.blocked(a).expect("blocked after 3 failures");
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(l.blocked(b), None);
        assert_eq!(AuthFailures::new(0).blocked(a), None);
    }
}
