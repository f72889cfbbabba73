//! Rate limits, as token buckets keyed by client address or write key:
//! [`AuthFailures`] counts failed authentications per address (an address
//! that has spent them gets 429 with `Retry-After` on every authenticated
//! route until a token is back: guessing tokens or write keys stays slow);
//! [`IngestLimits`] counts requests to the ingest routes per write key and
//! per address (a client sending faster gets 429 with `Retry-After`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Keys remembered at most per limit; full buckets are forgotten first.
const MAX_KEYS: usize = 100_000;

/// Buckets of `capacity` tokens each, refilled at `per_second`.
struct Buckets<K> {
    capacity: f64,
    per_second: f64,
    map: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(capacity: f64, per_second: f64) -> Self {
        Buckets {
            capacity,
            per_second,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        b.at = now;
    }

    /// Whole seconds until a bucket holding `tokens` has one (at least 1).
    fn wait(&self, tokens: f64) -> u64 {
        ((1.0 - tokens) / self.per_second).ceil().max(1.0) as u64
    }

    /// Seconds until `key` has a token again, when it has none.
    fn empty(&self, key: &K) -> Option<u64> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get_mut(key)?;
        self.refill(b, now);
        (b.tokens < 1.0).then(|| self.wait(b.tokens))
    }

    /// Takes a token from `key`'s bucket; `Err(seconds to wait)` when it
    /// has none (nothing is taken then).
    fn take(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            for b in map.values_mut() {
                self.refill(b, now);
            }
            map.retain(|_, b| b.tokens < self.capacity);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        self.refill(b, now);
        if b.tokens < 1.0 {
            return Err(self.wait(b.tokens));
        }
        b.tokens -= 1.0;
        Ok(())
    }
}

/// Failed authentications per client address: `per_minute` of them, the
/// bucket refilling evenly over a minute.
pub struct AuthFailures {
    buckets: Option<Buckets<IpAddr>>,
}

impl AuthFailures {
    /// `per_minute` 0: no limit.
    pub fn new(per_minute: u32) -> Self {
        AuthFailures {
            buckets: (per_minute > 0)
                .then(|| Buckets::new(f64::from(per_minute), f64::from(per_minute) / 60.0)),
        }
    }

    /// Seconds until `ip` may try again, when it has spent its failures.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        self.buckets.as_ref()?.empty(&ip)
    }

    /// `ip` failed to authenticate.
    pub fn failed(&self, ip: IpAddr) {
        if let Some(b) = &self.buckets {
            let _ = b.take(&ip);
        }
    }
}

/// The ingest routes' request rate: per write key and per client address,
/// each `per_second` requests with a burst of one second's worth (0: no
/// limit). A batch is one request.
pub struct IngestLimits {
    per_key: Option<Buckets<String>>,
    per_address: Option<Buckets<IpAddr>>,
}

/// Which limit a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Key,
    Address,
}

impl IngestLimits {
    pub fn new(per_key: u32, per_address: u32) -> Self {
        fn buckets<K: Hash + Eq + Clone>(n: u32) -> Option<Buckets<K>> {
            (n > 0).then(|| Buckets::new(f64::from(n), f64::from(n)))
        }
        IngestLimits {
            per_key: buckets(per_key),
            per_address: buckets(per_address),
        }
    }

    /// Counts one ingest request from `ip` with write key `key` (its name;
    /// `None` for the API token or no credential): `Err` with the limit it
    /// went over and the seconds to wait. The address is checked first, so
    /// a client over its address's limit spends nothing of its key's.
    pub fn admit(&self, ip: Option<IpAddr>, key: Option<&str>) -> Result<(), (Over, u64)> {
        if let (Some(b), Some(ip)) = (&self.per_address, ip) {
            b.take(&ip).map_err(|w| (Over::Address, w))?;
        }
        if let (Some(b), Some(key)) = (&self.per_key, key) {
            b.take(&key.to_string()).map_err(|w| (Over::Key, w))?;
        }
        Ok(())
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

    #[test]
    fn ingest_limits_each_key_and_address_apart() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let keys = IngestLimits::new(2, 0);
        assert!(keys.admit(Some(a), Some("web")).is_ok());
        assert!(keys.admit(Some(b), Some("web")).is_ok());
        assert_eq!(keys.admit(Some(a), Some("web")), Err((Over::Key, 1)));
        assert!(keys.admit(Some(a), Some("app")).is_ok());
        assert!(keys.admit(Some(a), None).is_ok(), "no key, no key limit");
        let addrs = IngestLimits::new(0, 1);
        assert!(addrs.admit(Some(a), Some("web")).is_ok());
        assert_eq!(addrs.admit(Some(a), Some("app")), Err((Over::Address, 1)));
        assert!(addrs.admit(Some(b), None).is_ok());
        let off = IngestLimits::new(0, 0);
        for _ in 0..100 {
            assert!(off.admit(Some(a), Some("web")).is_ok());
        }
    }
}
