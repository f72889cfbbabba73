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
    for (field, (name, lo, hi)) in fields.iter().zip(RANGES) {
        let numbers = field
            .split(',')
            .flat_map(|part| part.split('/').next().unwrap_or(part).split('-'));
        if let Some(n) = numbers
            .filter_map(|n| n.parse::<u32>().ok())
            .find(|n| !(lo..=hi).contains(n))
        {
            return Err(format!(
                "cron {s:?}: {name} {n} is out of range ({lo}-{hi})"
            ));
        }
    }
    let dow = weekdays_as_names(fields[4]).map_err(|e| format!("cron {s:?}: {e}"))?;
    let full = format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], dow
    );
    let schedule = cron::Schedule::from_str(&full).map_err(|e| {
        // The cron crate's message is its six-field form, a line with a caret
        // under the bad field, and maybe an explanation: name the field.
        let e = e.to_string();
        let mut lines = e.lines().skip(1);
        let caret = lines
            .next()
            .and_then(|l| l.find('^'))
            .filter(|c| *c <= full.len());
        let why = lines
            .next()
            .map(|w| format!(": {}", w.trim()))
            .unwrap_or_default();
        let field = caret.and_then(|c| {
            let before = &full[..c];
            let tokens = before.split_whitespace().count();
            let k = if before.is_empty() || before.ends_with(' ') {
                tokens
            } else {
                tokens.saturating_sub(1)
            };
            // Field 0 is the seconds added above.
            k.checked_sub(1)
                .and_then(|i| Some((*NAMES.get(i)?, fields[i])))
        });
        match field {
            Some((name, text)) => {
                format!("invalid cron {s:?}: the {name} field {text:?} is not valid{why}")
            }
            None => format!("invalid cron {s:?}{why}"),
        }
    })?;
    // A fixed start keeps checking deterministic; leap days still come by.
    let start = chrono::Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    if start.is_some_and(|t| schedule.after(&t).next().is_none()) {
        return Err(format!("cron {s:?} never matches a date"));
    }
    Ok(schedule)
}

const NAMES: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// The numeric range of the first four fields.
const RANGES: [(&str, u32, u32); 4] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
];

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
        assert_eq!(
            parse("0 25 * * *").unwrap_err(),
            r#"cron "0 25 * * *": hour 25 is out of range (0-23)"#
        );
        assert!(parse("60 * * * *")
            .unwrap_err()
            .contains("minute 60 is out of range"));
        assert!(parse("0 0 0 * *")
            .unwrap_err()
            .contains("day of month 0 is out of range"));
        assert!(parse("0 0 1-32/2 * *")
            .unwrap_err()
            .contains("day of month 32"));
        assert!(parse("0 0 1 13 *").unwrap_err().contains("month 13"));
        assert_eq!(
            parse("0 3 * * Mon-Fro").unwrap_err(),
            r#"invalid cron "0 3 * * Mon-Fro": the day of week field "Mon-Fro" is not valid: 'Fro' is not a valid day of the week."#
        );
        assert_eq!(
            parse("1,2, * * * *").unwrap_err(),
            r#"invalid cron "1,2, * * * *": the minute field "1,2," is not valid"#
        );
        assert!(parse("5-1 * * * *")
            .unwrap_err()
            .contains("the minute field \"5-1\" is not valid: Invalid range"));
        assert_eq!(
            parse("0 0 31 4 *").unwrap_err(),
            r#"cron "0 0 31 4 *" never matches a date"#
        );
        assert!(parse("0 0 29 2 *").is_ok());
        assert!(parse("0 3 * * 9").unwrap_err().contains("out of range"));
    }

    #[test]
    fn minutes_and_next() {
        let s = parse("* 9-16 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 9, 30, 42).unwrap();
        assert!(includes_minute(&s, &t));
        let late = Utc.with_ymd_and_hms(2026, 1, 5, 17, 0, 0).unwrap();
        assert!(!includes_minute(&s, &late));
        assert_eq!(
            next_after(&s, &late),
            Some(Utc.with_ymd_and_hms(2026, 1, 6, 9, 0, 0).unwrap())
        );
    }
}
