//! The event parsers on arbitrary bodies (`POST /v1/events` and the Segment
//! endpoints): they must never panic; a refusal says why;
//! and an accepted event must read back unchanged from what the store keeps
//! (`to_json`, then `from_json` without a default time), or a replay after a
//! restart would see a different event than the one acknowledged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nurture_core::ingest::{parse_events, parse_segment_batch, parse_segment_call, BadInput};
use nurture_core::model::Event;

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    check(parse_events(data, now));
    check(parse_segment_batch(data, now));
    for kind in ["identify", "track", "page"] {
        check(parse_segment_call(kind, data, now).map(|e| vec![e]));
    }
});

fn check(parsed: Result<Vec<Event>, BadInput>) {
    match parsed {
        Ok(events) => {
            for e in events {
                let stored = e.to_json().to_string();
                let value: serde_json::Value =
                    serde_json::from_str(&stored).expect("stored JSON parses");
                let back = Event::from_json(&value, None).unwrap_or_else(|err| {
                    panic!("stored event {stored} does not read back: {err}")
                });
                assert_eq!(back, e, "stored as {stored}");
            }
        }
        Err(err) => {
            assert!(!err.message.trim().is_empty());
        }
    }
}
