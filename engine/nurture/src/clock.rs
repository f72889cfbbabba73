//! What time it is, for the shell (daemon, API, outbox workers). The core
//! takes time as input; the shell asks a [`Clock`] instead of `Utc::now()`,
//! so that a test can put in a [`TestClock`] it sets and moves by hand.

use crate::model::time::Timestamp;
use std::sync::{Arc, Mutex};

/// The system clock (the default), or a [`TestClock`]'s time.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => chrono::Utc::now(),
            Some(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::test({})", self.now()),
        }
    }
}

/// A clock that stands still until told otherwise; [`TestClock::clock`]
/// gives the [`Clock`] to hand to the code under test.
#[derive(Clone, Debug)]
pub struct TestClock(Clock);

impl TestClock {
    pub fn new(at: Timestamp) -> TestClock {
        TestClock(Clock(Some(Arc::new(Mutex::new(at)))))
    }

    pub fn clock(&self) -> Clock {
        self.0.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.0.now()
    }

    pub fn set(&self, at: Timestamp) {
        if let Some(t) = &self.0 .0 {
            *t.lock().unwrap_or_else(|p| p.into_inner()) = at;
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.set(self.now() + by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_moves_only_when_told() {
        let start = crate::model::time::parse("2026-01-01T00:00:00Z").unwrap();
        let t = TestClock::new(start);
        let c = t.clock();
        assert_eq!(c.now(), start);
        t.advance(chrono::Duration::seconds(90));
        assert_eq!(c.now(), start + chrono::Duration::seconds(90));
        let before = chrono::Utc::now();
        assert!(Clock::system().now() >= before);
    }
}
