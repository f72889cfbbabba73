//! A deterministic workload: `n_leads` leads producing `n_events` events of a
//! realistic mix (identify, page views, forms, email clicks), the same for
//! the same seed. Used by benchmarks.

use crate::model::{time::Timestamp, Event};
use serde_json::{json, Map, Value};

/// A small, fast, seedable generator (SplitMix64): no dependency needed for
/// reproducible noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
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

pub fn generate(seed: u64, n_leads: usize, n_events: usize, start: Timestamp) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n_events);
    let mut at = start;
    for i in 0..n_events {
        at += chrono::Duration::seconds(1 + rng.below(30) as i64);
        let lead = format!("lead-{:06}", rng.below(n_leads.max(1) as u64));
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
            _ => ("email_clicked", Map::new(), Map::new()),
        };
        out.push(Event {
            id: format!("ev-{i}"),
            lead,
            kind: kind.to_string(),
            at,
            properties,
            traits,
        });
    }
    out
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
