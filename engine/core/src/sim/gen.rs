//! A deterministic workload: `n_leads` leads producing events of a realistic
//! mix (identify, page views, forms, email clicks, sales feedback), the same
//! for the same seed. Used by benchmarks and `nurture gen`.

use crate::model::{time::Timestamp, Event};
use serde_json::{json, Map, Value};

/// A small, fast, seedable generator (SplitMix64): no dependency needed for
/// reproducible noise. Also the differential test's (cel/fast.rs).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: [&str; 6] = [
    "/pricing",
    "/pricing/enterprise",
    "/docs/start",
    "/docs/api",
    "/blog/launch",
    "/",
];
const INDUSTRIES: [&str; 4] = ["software", "fintech", "retail", "health"];

/// `n_events` events; see [`Gen`].
pub fn generate(seed: u64, n_leads: usize, n_events: usize, start: Timestamp) -> Vec<Event> {
    Gen::new(seed, n_leads, start).take(n_events).collect()
}

/// An endless stream of events over `n_leads` leads, one to 30 seconds apart
/// from `start`: 10 % identify, 70 % page views, 10 % form fills, 8 % email
/// clicks, 2 % sales feedback. Streams, so `nurture gen` can write millions.
pub struct Gen {
    rng: Rng,
    n_leads: u64,
    at: Timestamp,
    i: u64,
    /// Milliseconds per unit of gap (1–30 units between events): 1,000 by
    /// default; smaller to pack many events into a shorter span.
    unit_ms: i64,
}

impl Gen {
    pub fn new(seed: u64, n_leads: usize, start: Timestamp) -> Gen {
        Gen {
            rng: Rng(seed),
            n_leads: n_leads.max(1) as u64,
            at: start,
            i: 0,
            unit_ms: 1_000,
        }
    }

    /// Spreads `n_events` events over about `span` instead of 1–30 s apart
    /// (the gaps keep their shape, scaled; at least 1 ms each). The same
    /// seed gives the same leads and kinds as without a span.
    pub fn with_span(mut self, n_events: u64, span: chrono::Duration) -> Gen {
        // The gaps average 15.5 units.
        let per_event = span.num_milliseconds() as f64 / n_events.max(1) as f64;
        self.unit_ms = ((per_event / 15.5).round() as i64).max(1);
        self
    }
}

impl Iterator for Gen {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let rng = &mut self.rng;
        self.at += chrono::Duration::milliseconds((1 + rng.below(30) as i64) * self.unit_ms);
        let lead = format!("lead-{:06}", rng.below(self.n_leads));
        let roll = rng.below(100);
        let (kind, properties, traits) = match roll {
            0..=9 => {
                let mut t = Map::new();
                t.insert("email".into(), json!(format!("{lead}@example.com")));
                t.insert("industry".into(), json!(INDUSTRIES[rng.below(4) as usize]));
                t.insert("employees".into(), json!(rng.below(5000)));
                t.insert(
                    "consent".into(),
                    json!(if rng.below(4) == 0 {
                        "unknown"
                    } else {
                        "opted_in"
                    }),
                );
                ("identify", Map::new(), t)
            }
            10..=79 => {
                let mut p = Map::new();
                p.insert(
                    "path".into(),
                    json!(PATHS[rng.below(PATHS.len() as u64) as usize]),
                );
                ("page_viewed", p, Map::new())
            }
            80..=89 => {
                let mut p = Map::new();
                p.insert(
                    "form".into(),
                    json!(if rng.below(5) == 0 { "demo" } else { "contact" }),
                );
                ("form_submitted", p, Map::new())
            }
            90..=97 => ("email_clicked", Map::new(), Map::new()),
            _ => {
                // Sales' answer; ignored (and noted) for leads sales does not own.
                let mut p = Map::new();
                p.insert(
                    "status".into(),
                    json!(["accepted", "won", "rejected", "lost"][rng.below(4) as usize]),
                );
                ("sales_feedback", p, Map::new())
            }
        };
        let e = Event {
            id: format!("ev-{}", self.i),
            lead,
            kind: kind.to_string(),
            at: self.at,
            properties,
            traits,
            imported: None,
        };
        self.i += 1;
        Some(e)
    }
}

/// The workload as JSON Lines.
pub fn to_jsonl(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&Value::to_string(&e.to_json()));
        s.push('\n');
    }
    s
}
