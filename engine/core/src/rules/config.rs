//! The rules format as marketers write it: serde types, one per YAML section.
//!
//! These types only describe and check shape (unknown keys, types, durations,
//! cron, zones). Cross-references and CEL live in `compile.rs`. The doc
//! comments here are the field docs of the JSON Schema (`nurture schema`).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;

/// A whole rules file. Every section is optional; files in a directory merge.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Named lists of values, read by conditions as `lists.<name>` (e.g.
    /// `lead.attributes.country in lists.target_countries`).
    #[serde(default)]
    pub lists: BTreeMap<String, ListSpec>,
    /// Engagement points, added to the lead's ledger when events match.
    #[serde(default)]
    pub scoring: Vec<ScoringRule>,
    /// Demographic points: fit is the sum over the rules that hold now.
    #[serde(default)]
    pub fit: Vec<FitRule>,
    /// Sandboxed WebAssembly scoring plugins.
    #[serde(default)]
    pub plugins: Vec<PluginRule>,
    /// Stage conditions: the highest stage whose condition holds wins (forward only).
    #[serde(default)]
    pub stages: Stages,
    /// Email templates (MiniJinja), with `lead` and `unsubscribe_url` in scope.
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Drip campaigns.
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
    /// Sales owners and how SQLs are assigned to them.
    #[serde(default)]
    pub routing: Routing,
    /// Outgoing webhooks.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// Engine settings.
    #[serde(default)]
    pub settings: Settings,
}

/// The top-level sections of a rules file, in the order they are read.
pub const SECTIONS: [&str; 10] = [
    "lists",
    "scoring",
    "fit",
    "plugins",
    "stages",
    "templates",
    "campaigns",
    "routing",
    "webhooks",
    "settings",
];

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoringRule {
    /// Unique among scoring rules; shown in the ledger.
    pub name: String,
    /// Event type(s) that trigger the rule; `*` means any event.
    #[serde(default)]
    pub on: Option<OneOrMany>,
    /// Cron (5 fields, UTC) instead of `on`: the rule runs for every lead.
    #[serde(default)]
    pub schedule: Option<CronSpec>,
    /// CEL condition over `lead`, `event` and `now`.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// Points added (negative allowed).
    pub points: i64,
    /// How often the rule may apply to one lead.
    #[serde(default)]
    pub limit: Option<Limit>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Applications allowed in the window.
    pub times: u32,
    /// The window; omitted means for the lead's lifetime.
    #[serde(default)]
    pub per: Option<DurationSpec>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FitRule {
    pub name: String,
    /// CEL condition; the points count while it holds.
    #[serde(rename = "if")]
    pub condition: String,
    pub points: i64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRule {
    pub name: String,
    /// Path to the WebAssembly component, relative to this rules file.
    pub wasm: String,
    /// Event type(s) the plugin is called for; `*` means any event.
    pub on: OneOrMany,
    /// Any YAML, handed to the plugin as JSON.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub config: Option<serde_yaml::Value>,
    /// Fuel per call (default 10000000).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Memory limit: bytes, or e.g. `16MiB` (the default).
    #[serde(default)]
    pub memory: Option<MemorySpec>,
    /// Wall-clock limit per call, e.g. `100ms` (default).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// One CEL condition per stage; `subscriber` is where every lead starts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    #[serde(default)]
    pub lead: Option<String>,
    #[serde(default)]
    pub mql: Option<String>,
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub opportunity: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    /// MiniJinja subject line.
    pub subject: String,
    /// MiniJinja plain-text body.
    pub text: String,
    /// Optional MiniJinja HTML body.
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    /// CEL: a lead enrolls (once per cycle) when this holds.
    pub enroll: String,
    /// CEL: an enrolled lead leaves when this holds.
    #[serde(default)]
    pub exit: Option<String>,
    /// Send window, a 5-field cron, e.g. `* 9-16 * * Mon-Fri`.
    #[serde(default)]
    pub window: Option<CronSpec>,
    /// IANA zone of the window, `lead` (the lead's `attributes.timezone`), or
    /// `lead.attributes.<key>` (that attribute); an attribute that is not
    /// an IANA zone means UTC.
    #[serde(default)]
    pub timezone: Option<ZoneSpec>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Delay after the previous step was sent or skipped (for the first
    /// step: after enrollment). Give `after` or `at`.
    #[serde(default)]
    pub after: Option<DurationSpec>,
    /// Time since enrollment instead of `after` (`at: 7d`: a week after
    /// enrolling), never before the previous step went out.
    #[serde(default)]
    pub at: Option<DurationSpec>,
    pub template: String,
    /// CEL: when false at the due time the step is skipped.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub owners: Vec<Owner>,
    /// First match wins; a rule without `if` always matches.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    #[serde(default)]
    pub sla: Option<Sla>,
    /// The score a recycled lead restarts from (default 0).
    #[serde(default)]
    pub recycle_score: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub id: String,
    pub email: String,
    /// Most open leads at once (assigned, not yet won, lost or rejected).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Share for the `weighted` strategy (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub name: String,
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    pub owners: Vec<String>,
    pub strategy: Strategy,
    /// `claim` rules only: how long the offer stands (e.g. `48h`). Unclaimed
    /// by then, the lead goes to `fallback`, or without one to the next
    /// routing rule whose `if` holds. Omitted: the offer stands until claimed.
    #[serde(default)]
    pub claim_within: Option<DurationSpec>,
    /// With `claim_within`: the owner who gets a lead nobody claimed in time.
    #[serde(default)]
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    Weighted,
    LeastLoaded,
    Claim,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Time an owner has to give feedback.
    pub accept_within: DurationSpec,
    /// Who hears of a breach.
    #[serde(default)]
    pub notify: Option<String>,
    #[serde(default)]
    pub on_breach: Option<OnBreach>,
    /// Breaches of one lead that start the clock again (a reassignment, or a
    /// reminder to the same owner) before the next one ends it (default 2).
    /// Then the lead goes to `fallback`, or stays with its owner, and is not
    /// reassigned or escalated again.
    #[serde(default)]
    pub max_reassign: Option<u32>,
    /// The owner who gets a lead once its SLA clock has stopped for good
    /// (after `max_reassign`); without one the lead stays with its owner.
    #[serde(default)]
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    /// Only notify.
    Notify,
    /// Notify and assign the next owner the rule's strategy picks.
    Reassign,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub on: Vec<WebhookEvent>,
    /// Signing secret; `${ENV_VAR}` reads the environment.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
pub enum WebhookEvent {
    #[serde(rename = "lead.stage_changed")]
    StageChanged,
    #[serde(rename = "lead.assigned")]
    Assigned,
    #[serde(rename = "lead.sla_breached")]
    SlaBreached,
    #[serde(rename = "lead.recycled")]
    Recycled,
    #[serde(rename = "lead.unsubscribed")]
    Unsubscribed,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::StageChanged => "lead.stage_changed",
            WebhookEvent::Assigned => "lead.assigned",
            WebhookEvent::SlaBreached => "lead.sla_breached",
            WebhookEvent::Recycled => "lead.recycled",
            WebhookEvent::Unsubscribed => "lead.unsubscribed",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub email: Option<EmailSettings>,
    /// Attribute keys whose values are numbers even when sent as text:
    /// `"1,500"` in a trait is stored as 1500 (thousands separators `,`,
    /// `_` or spaces; `.` is the decimal point). Joined across files.
    #[serde(default)]
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The `From` header of marketing mail.
    pub from: String,
    /// Send drips only to leads whose consent is `opted_in` (default true).
    #[serde(default)]
    pub require_consent: Option<bool>,
    /// Most marketing emails per lead in a sliding window.
    #[serde(default)]
    pub frequency_cap: Option<FrequencyCap>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max: u32,
    pub per: DurationSpec,
}

// ---------------------------------------------------------------------------
// Scalar types that check themselves, so a bad value is reported at its place.

/// One event type or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event type or a list of event types")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                if s.is_empty() {
                    return Err(E::custom("an event type must not be empty"));
                }
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    if s.is_empty() {
                        return Err(de::Error::custom("an event type must not be empty"));
                    }
                    v.push(s);
                }
                if v.is_empty() {
                    return Err(de::Error::custom("the list of event types is empty"));
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for OneOrMany {
    fn schema_name() -> Cow<'static, str> {
        "EventTypes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An event type, or a list of them; `*` matches any event.",
            "anyOf": [{"type": "string", "minLength": 1},
                      {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}]
        })
    }
}

/// Implements Deserialize (via FromStr) and JsonSchema for a string-shaped type.
macro_rules! string_spec {
    ($ty:ident, $name:literal, $desc:literal, $pattern:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                if $pattern.is_empty() {
                    json_schema!({"type": "string", "description": $desc})
                } else {
                    json_schema!({"type": "string", "description": $desc, "pattern": $pattern})
                }
            }
        }
    };
}

/// A duration: an integer and a unit, `ms s m h d w` (`90m`, `3d`, `2w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub chrono::Duration);

impl FromStr for DurationSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid duration {s:?}: write an integer and a unit (s, m, h, d, w or ms), e.g. \"3d\"")
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: i64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => chrono::Duration::try_milliseconds(n),
            "s" => chrono::Duration::try_seconds(n),
            "m" => chrono::Duration::try_minutes(n),
            "h" => chrono::Duration::try_hours(n),
            "d" => chrono::Duration::try_days(n),
            "w" => chrono::Duration::try_weeks(n),
            _ => return Err(bad()),
        };
        // Bounded so that time plus or minus a duration always stays in range.
        d.filter(|d| *d <= chrono::Duration::days(MAX_DURATION_DAYS))
            .map(DurationSpec)
            .ok_or_else(|| format!("duration {s:?} is too long: at most 100 years"))
    }
}

/// The longest duration a rule may give (about 100 years).
pub const MAX_DURATION_DAYS: i64 = 36_525;
string_spec!(
    DurationSpec,
    "Duration",
    "An integer and a unit: ms, s, m, h, d or w (e.g. `3d`).",
    "^[0-9]+(ms|s|m|h|d|w)$"
);

/// A 5-field cron (minute hour day-of-month month day-of-week), as in crontab.
#[derive(Debug, Clone)]
pub struct CronSpec {
    pub source: String,
    pub schedule: cron::Schedule,
}

impl FromStr for CronSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::rules::cron5::parse(s).map(|schedule| CronSpec {
            source: s.to_string(),
            schedule,
        })
    }
}
string_spec!(
    CronSpec,
    "Cron",
    "Five cron fields: minute hour day-of-month month day-of-week (0 or 7 = Sunday, or Mon..Sun).",
    ""
);

/// An IANA time zone (`Europe/Berlin`), `lead` or `lead.attributes.<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSpec {
    Fixed(chrono_tz::Tz),
    /// The lead's `attributes.timezone`, else UTC.
    Lead,
    /// The lead's attribute of this key, else UTC.
    Attribute(String),
}

impl ZoneSpec {
    /// The attribute key a lead's zone is read from, if it is the lead's.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            ZoneSpec::Fixed(_) => None,
            ZoneSpec::Lead => Some("timezone"),
            ZoneSpec::Attribute(k) => Some(k),
        }
    }
}

impl FromStr for ZoneSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "lead" {
            return Ok(ZoneSpec::Lead);
        }
        if let Some(rest) = s.strip_prefix("lead.") {
            // One attribute key, as a condition would name it; anything else
            // of the lead (`lead.timezone`) reads nothing, so it is refused.
            let key = rest.strip_prefix("attributes.").ok_or_else(|| {
                format!("time zone {s:?}: a lead's zone is `lead` (its attributes.timezone) or `lead.attributes.<key>`")
            })?;
            // A dot would read as a nested attribute, which is not looked up.
            if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '.') {
                return Err(format!(
                    "time zone {s:?}: name one attribute after `lead.attributes.` (no spaces or dots), e.g. \"lead.attributes.tz\""
                ));
            }
            return Ok(ZoneSpec::Attribute(key.to_string()));
        }
        s.parse::<chrono_tz::Tz>()
            .map(ZoneSpec::Fixed)
            .map_err(|_| {
                format!(
                    "unknown time zone {s:?}: use an IANA name like \"Europe/Berlin\", \"lead\" or \"lead.attributes.<key>\""
                )
            })
    }
}
string_spec!(
    ZoneSpec,
    "Zone",
    "An IANA time zone such as `Europe/Berlin`; `lead` (the lead's `attributes.timezone`); or `lead.attributes.<key>`. A lead's value that is not an IANA zone means UTC.",
    ""
);

/// A named list's values: at least one, each text, a number or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub struct ListSpec(pub Vec<serde_json::Value>);

/// One value of a named list.
struct ListItem(serde_json::Value);

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ListItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list item: text, a number, true or false")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ListItem, E> {
                Ok(ListItem(s.into()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<ListItem, E> {
                Ok(ListItem(b.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ListItem, E> {
                Ok(ListItem(n.into()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ListItem, E> {
                Ok(ListItem(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ListItem, E> {
                serde_json::Number::from_f64(n)
                    .map(|n| ListItem(n.into()))
                    .ok_or_else(|| E::custom(format!("list item {n}: a number must be finite")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ListSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ListSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<ListSpec, A::Error> {
                let mut v = Vec::new();
                while let Some(ListItem(x)) = a.next_element()? {
                    v.push(x);
                }
                if v.is_empty() {
                    // An empty list makes every `in` false: a mistake, not a rule.
                    return Err(de::Error::custom(
                        "the list is empty: give at least one value",
                    ));
                }
                Ok(ListSpec(v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl JsonSchema for ListSpec {
    fn schema_name() -> Cow<'static, str> {
        "List".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "At least one value: text, numbers or booleans.",
            "type": "array",
            "minItems": 1,
            "items": {"type": ["string", "number", "boolean"]}
        })
    }
}

/// A memory size: `16MiB`, `512KiB`, `1GiB` or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySpec(pub u64);

impl FromStr for MemorySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid memory size {s:?}: write e.g. \"16MiB\", \"512KiB\" or \"1GiB\"");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(MemorySpec).ok_or_else(bad)
    }
}
impl<'de> Deserialize<'de> for MemorySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = MemorySpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a memory size: bytes, or e.g. \"16MiB\"")
            }
            // A plain number is bytes, as the docs say (`memory: 2097152`).
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MemorySpec, E> {
                Ok(MemorySpec(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MemorySpec, E> {
                u64::try_from(n).map(MemorySpec).map_err(|_| {
                    E::custom(format!("invalid memory size {n}: it cannot be negative"))
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MemorySpec, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for MemorySpec {
    fn schema_name() -> Cow<'static, str> {
        "MemorySize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes, or a size such as `16MiB`, `512KiB` or `1GiB`.",
            "anyOf": [{"type": "integer", "minimum": 0},
                      {"type": "string", "pattern": "^[0-9]+\\s*(B|KiB|MiB|GiB|KB|MB|GB|K|M|G)?$"}]
        })
    }
}

/// The schema of a rules file, for editors (`nurture schema`).
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RulesFile);
    serde_json::to_value(schema).unwrap_or_default()
}
