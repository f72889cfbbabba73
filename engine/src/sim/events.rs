//! Reading events from JSON Lines, with every bad line reported as
//! `file:line:col: message`.

use crate::model::{time::Timestamp, Event};
use std::path::Path;

/// Reads a JSON Lines file of events. A missing `at` takes the time of the
/// event before it (the first event needs one).
pub fn read_events_file(path: &Path) -> Result<Vec<Event>, Vec<String>> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{display}: cannot read: {e}")])?;
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
            Err(e) => {
                let col = line.find(&format!("\"{}\"", e.field.split('.').next().unwrap_or(""))).map_or(1, |c| c + 1);
                errors.push(format!("{display}:{n}:{col}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
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
        assert!(errs[1].starts_with("ev.jsonl:3:37: `at`"), "{}", errs[1]);
    }

    #[test]
    fn missing_at_follows_the_previous_event() {
        let text = "{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"2026-01-01T00:00:00Z\"}\n{\"id\":\"e2\",\"lead\":\"u1\",\"type\":\"y\"}\n";
        let evs = read_events_str("ev.jsonl", text).unwrap();
        assert_eq!(evs[1].at, evs[0].at);
    }
}
