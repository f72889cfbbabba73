//! Reading events from JSON Lines, with every bad line reported as
//! `file:line:col: message`.

use crate::model::{time::Timestamp, Event};
use std::path::Path;

/// Reads a JSON Lines file of events. A missing `at` takes the time of the
/// event before it (the first event needs one).
pub fn read_events_file(path: &Path) -> Result<Vec<Event>, Vec<String>> {
    let display = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{display}: cannot read: {e}")])?;
    read_events_str(&display, &text)
}

pub fn read_events_str(display: &str, text: &str) -> Result<Vec<Event>, Vec<String>> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut last_at: Option<Timestamp> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                errors.push(format!("{display}:{n}:{}: invalid JSON: {msg}", e.column()));
                continue;
            }
        };
        match Event::from_json(&value, last_at) {
            Ok(ev) => {
                last_at = Some(ev.at);
                events.push(ev);
            }
            Err(e) => errors.push(format!("{display}:{n}:{}: {e}", key_col(line, &e.field))),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
}

/// The 1-based column of the key naming `field` (`traits.consent`: the
/// `consent` key after the `traits` key) in a JSON line; as far as the path
/// goes, else 1.
fn key_col(line: &str, field: &str) -> usize {
    let mut from = 0;
    let mut found = None;
    for seg in field.split('.').filter(|s| !s.is_empty()) {
        let quoted = format!("\"{seg}\"");
        let mut search = from;
        let key = loop {
            let Some(i) = line[search..].find(&quoted) else {
                break None;
            };
            let end = search + i + quoted.len();
            // A key, not a value that happens to read the same.
            if line[end..].trim_start().starts_with(':') {
                break Some(search + i);
            }
            search = end;
        };
        let Some(start) = key else { break };
        found = Some(start);
        from = start + quoted.len();
    }
    found.map_or(1, |b| line[..b].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_line_with_its_place() {
        let text = "{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"2026-01-01T00:00:00Z\"}\n{\"id\":\"e2\",\"lead\":\"u1\"\n{\"id\":\"e3\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"soon\"}\n{\"id\":\"e4\",\"lead\":\"u1\",\"type\":\"x\"}\n";
        let errs = read_events_str("ev.jsonl", text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("ev.jsonl:2:"), "{}", errs[0]);
        assert!(errs[1].starts_with("ev.jsonl:3:35: `at`"), "{}", errs[1]);
    }

    #[test]
    fn points_at_the_key_of_the_field() {
        let line = r#"{"id":"at","lead":"u1","type":"identify","at":"soon","traits":{"x":"consent","consent":"maybe"}}"#;
        assert_eq!(key_col(line, "at"), 42);
        assert_eq!(key_col(line, "traits.consent"), 78);
        assert_eq!(key_col(line, "properties.status"), 1);
        assert_eq!(key_col(line, ""), 1);
    }

    #[test]
    fn missing_at_follows_the_previous_event() {
        let text = "{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"2026-01-01T00:00:00Z\"}\n{\"id\":\"e2\",\"lead\":\"u1\",\"type\":\"y\"}\n";
        let evs = read_events_str("ev.jsonl", text).unwrap();
        assert_eq!(evs[1].at, evs[0].at);
    }
}
