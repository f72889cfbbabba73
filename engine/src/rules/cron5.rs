//! Five-field cron as crontab writes it, on top of the `cron` crate.
//!
//! The `cron` crate wants a seconds field and counts weekdays 1-7 from Sunday;
//! crontab counts 0-7 with 0 and 7 both Sunday. Marketers write crontab, so
//! numeric weekdays are rewritten as names before parsing.

use chrono::{DateTime, TimeZone, Timelike};
use std::str::FromStr;

const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

pub fn parse(s: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "cron {s:?} has {} fields; write five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    let dow = weekdays_as_names(fields[4]).map_err(|e| format!("cron {s:?}: {e}"))?;
    let full = format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], dow);
    cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron {s:?}: {e}"))
}

fn weekdays_as_names(field: &str) -> Result<String, String> {
    let name = |t: &str| -> Result<String, String> {
        match t.parse::<usize>() {
            Ok(n) if n < DAYS.len() => Ok(DAYS[n].to_string()),
            Ok(n) => Err(format!("day of week {n} is out of range (0-7)")),
            Err(_) => Ok(t.to_string()),
        }
    };
    let mut parts = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (part, None),
        };
        let mut out = match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (name(a)?, name(b)?);
                // `5-7` ends on Sunday, which the cron crate numbers first.
                if b == "SUN" && a != "SUN" {
                    format!("{a}-SAT,SUN")
                } else {
                    format!("{a}-{b}")
                }
            }
            None => name(range)?,
        };
        if let Some(st) = step {
            if out.contains(',') {
                return Err("a step cannot follow a range ending on Sunday".into());
            }
            out = format!("{out}/{st}");
        }
        parts.push(out);
    }
    Ok(parts.join(","))
}

/// Whether the minute holding `t` is in the schedule.
pub fn includes_minute<Z: TimeZone>(schedule: &cron::Schedule, t: &DateTime<Z>) -> bool {
    let minute = t
        .with_second(0)
        .and_then(|m| m.with_nanosecond(0))
        .unwrap_or_else(|| t.clone());
    schedule.includes(minute)
}

/// The first scheduled instant strictly after `t`.
pub fn next_after<Z: TimeZone>(schedule: &cron::Schedule, t: &DateTime<Z>) -> Option<DateTime<Z>> {
    schedule.after(t).next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn crontab_weekdays() {
        let s = parse("0 9 * * 1-5").unwrap();
        // 2026-01-05 is a Monday, 2026-01-10 a Saturday.
        let mon = Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap();
        let sat = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
        assert!(s.includes(mon));
        assert!(!s.includes(sat));
        let sun = parse("0 9 * * 0").unwrap();
        assert!(sun.includes(Utc.with_ymd_and_hms(2026, 1, 11, 9, 0, 0).unwrap()));
        let sun7 = parse("0 9 * * 5-7").unwrap();
        assert!(sun7.includes(Utc.with_ymd_and_hms(2026, 1, 11, 9, 0, 0).unwrap()));
        assert!(!sun7.includes(mon));
        assert!(parse("* 9-16 * * Mon-Fri").is_ok());
    }

    #[test]
    fn rejects_bad_crons() {
        assert!(parse("0 3 * *").unwrap_err().contains("4 fields"));
        assert!(parse("0 25 * * *").is_err());
        assert!(parse("0 3 * * 9").unwrap_err().contains("out of range"));
    }

    #[test]
    fn minutes_and_next() {
        let s = parse("* 9-16 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 9, 30, 42).unwrap();
        assert!(includes_minute(&s, &t));
        let late = Utc.with_ymd_and_hms(2026, 1, 5, 17, 0, 0).unwrap();
        assert!(!includes_minute(&s, &late));
        assert_eq!(next_after(&s, &late), Some(Utc.with_ymd_and_hms(2026, 1, 6, 9, 0, 0).unwrap()));
    }
}
