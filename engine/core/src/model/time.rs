//! Time helpers: one timestamp type and its one printed form.

use chrono::{DateTime, SecondsFormat, Utc};

/// Every instant in Nurture is UTC.
pub type Timestamp = DateTime<Utc>;

/// RFC 3339, UTC with a `Z`: the form every output uses. Whole seconds print
/// without a fraction; a time that has one keeps it (to the nanosecond), so
/// what is stored reads back as the same instant.
pub fn format(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses RFC 3339 (any offset) into UTC.
pub fn parse(s: &str) -> Result<Timestamp, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Serde adapter: timestamps print in [`format`]'s form.
pub mod serde_ts {
    use super::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Milliseconds since the epoch: how the database stores an instant.
/// An RFC 3339 time, or a plain date (`2026-01-05`) for its midnight UTC.
pub fn parse_time_or_date(s: &str) -> Result<Timestamp, chrono::ParseError> {
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => Ok(d.and_time(chrono::NaiveTime::MIN).and_utc()),
        Err(_) => parse(s),
    }
}

/// A span as rules write it: `30d`, `36h`, `90m`, `45s`.
pub fn format_span(d: &chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        _ if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s != 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub fn millis(t: &Timestamp) -> i64 {
    t.timestamp_millis()
}

/// The instant `millis` stored (the epoch for one out of range).
pub fn from_millis(ms: i64) -> Timestamp {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
