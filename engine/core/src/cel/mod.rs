//! CEL conditions: compiled once when rules load, evaluated against `lead`,
//! `event`, `now` and the rules' `lists`.
//!
//! Values are converted into CEL lazily: a condition that never reads `lead`
//! does not pay for converting it, and a lead is converted again only after
//! it changed.

mod check;
pub mod fast;
mod views;
pub mod wake;

pub use check::{EVENT_FIELDS, LEAD_FIELDS};

use crate::model::{time::Timestamp, Event, LeadState};
use cel::common::types::CelTimestamp;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, Program, Value};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use views::{EventView, LeadView};

/// The variables a condition may read.
pub const VARIABLES: [&str; 4] = ["lead", "event", "now", "lists"];

/// A compiled CEL condition.
#[derive(Clone)]
pub struct Condition {
    pub source: Arc<str>,
    program: Arc<Program>,
    pub deps: Deps,
    /// What the condition belongs to, for the timeline (`stages.mql`, a rule name).
    pub label: Arc<str>,
    /// Where a lead caches this condition's result; `None` for conditions
    /// that read `now` or `event`, whose results never carry over.
    pub slot: Option<usize>,
    /// How it depends on `now` (when a `schedule` tick can change a lead).
    pub shape: Arc<wake::Shape>,
    /// The rules' lists, as CEL values built once, if the condition reads
    /// `lists`.
    lists: Option<Arc<dyn Val>>,
    /// Fields compared with a number (paths from `lead` / `event`): when the
    /// condition fails and one of them holds text, the evaluator says so.
    numeric: Arc<[Vec<String>]>,
    /// The condition compiled to read the lead and event directly, when
    /// its shape allows (fast.rs); the interpreter decides the rest.
    fast: Option<Arc<fast::Node>>,
}

/// What a condition reads, found from its source. Over-approximate by design:
/// anything unclear counts as reading everything. It lets the evaluator skip
/// conditions whose inputs did not change (fit, most of all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deps {
    pub now: bool,
    pub event: bool,
    /// Bits of [`fields`] read from `lead`.
    pub lead: u16,
}

/// The lead's fields as bits, for change tracking.
pub mod fields {
    pub const ID: u16 = 1 << 0;
    pub const EMAIL: u16 = 1 << 1;
    pub const SCORE: u16 = 1 << 2;
    pub const FIT: u16 = 1 << 3;
    pub const STAGE: u16 = 1 << 4;
    pub const OWNER: u16 = 1 << 5;
    pub const CONSENT: u16 = 1 << 6;
    pub const ATTRIBUTES: u16 = 1 << 7;
    pub const CREATED_AT: u16 = 1 << 8;
    pub const LAST_ACTIVITY_AT: u16 = 1 << 9;
    /// Changes with a recycle, which touches every field.
    pub const RECYCLED_COUNT: u16 = 1 << 10;
    pub const ALL: u16 = u16::MAX;

    pub fn by_name(name: &str) -> u16 {
        match name {
            "id" => ID,
            "email" => EMAIL,
            "score" => SCORE,
            "fit" => FIT,
            "stage" => STAGE,
            "owner" => OWNER,
            "consent" => CONSENT,
            "attributes" => ATTRIBUTES,
            "created_at" => CREATED_AT,
            "last_activity_at" => LAST_ACTIVITY_AT,
            "recycled_count" => RECYCLED_COUNT,
            _ => ALL,
        }
    }
}

impl Deps {
    pub fn of(source: &str) -> Deps {
        let mut deps = Deps {
            now: false,
            event: false,
            lead: 0,
        };
        let bytes = source.as_bytes();
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        // Words inside string literals are not reads. Triple-quoted strings
        // are not parsed here: with them, every word counts (safe side).
        let skip_strings = !source.contains("'''") && !source.contains(r#"""""#);
        let mut i = 0;
        while i < bytes.len() {
            if skip_strings && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            if !is_ident(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let after_dot = start > 0 && bytes[start - 1] == b'.';
            match &source[start..i] {
                "now" if !after_dot => deps.now = true,
                "event" if !after_dot => deps.event = true,
                "lead" if !after_dot => {
                    let rest = &source[i..];
                    let field_len = rest
                        .strip_prefix('.')
                        .map(|r| r.bytes().take_while(|b| is_ident(*b)).count())
                        .unwrap_or(0);
                    deps.lead |= if field_len == 0 {
                        fields::ALL
                    } else {
                        fields::by_name(&rest[1..1 + field_len])
                    };
                }
                _ => {}
            }
        }
        deps
    }

    /// Whether the value may differ from the last one, given the lead fields
    /// changed since: never for a condition of unchanged lead fields only.
    pub fn may_change(&self, changed: u16) -> bool {
        self.now || self.event || self.lead & changed != 0
    }
}

impl Condition {
    pub fn labeled(mut self, label: &str) -> Condition {
        self.label = label.into();
        self
    }

    /// The fast form of the condition, if it has one.
    pub fn fast(&self) -> Option<&fast::Node> {
        self.fast.as_deref()
    }

    /// Whether the condition reads the rules' `lists`.
    pub fn reads_lists(&self) -> bool {
        self.lists.is_some()
    }

    /// A field the condition compares with a number that holds text instead
    /// (`lead.attributes.employees` = `"1,500"`): its path and text. Looked
    /// at only when the condition did not hold, so a condition that holds
    /// pays nothing.
    pub fn number_as_text(
        &self,
        lead: &LeadState,
        event: Option<&Event>,
    ) -> Option<(String, String)> {
        self.numeric.iter().find_map(|path| {
            let object = match (path[0].as_str(), path[1].as_str()) {
                ("lead", _) => &lead.attributes,
                ("event", "properties") => &event?.properties,
                ("event", _) => &event?.traits,
                _ => return None,
            };
            let mut keys = path[2..].iter();
            let mut v = object.get(keys.next()?)?;
            for k in keys {
                v = v.as_object()?.get(k)?;
            }
            v.as_str().map(|text| (path.join("."), text.to_string()))
        })
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// A CEL compile error at a 1-based line and column of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The CEL environment shared by every condition of a ruleset.
#[derive(Clone)]
pub struct CelEnv {
    env: Arc<Env>,
    /// Hands out cache slots to the conditions compiled here.
    slots: Arc<AtomicUsize>,
    /// The rules' lists as one CEL map, converted once for every condition.
    lists: Arc<dyn Val>,
    list_names: Arc<[String]>,
    /// The same lists as written, for the fast conditions.
    list_values: Arc<BTreeMap<String, Vec<Json>>>,
}

impl Default for CelEnv {
    fn default() -> Self {
        let mut env = Env::stdlib();
        // cel-go's `ext.Strings()` (`lowerAscii`, `trim`, `split`, ...), which
        // conditions on free-text attributes need. It declares nothing the
        // standard library has, so adding it cannot fail.
        let _ = env.add_extension(cel::extensions::strings);
        CelEnv {
            env: Arc::new(env),
            slots: Arc::default(),
            lists: list_value(&BTreeMap::new()),
            list_names: Arc::new([]),
            list_values: Arc::default(),
        }
    }
}

/// Lists as one CEL map of lists.
fn list_value(lists: &BTreeMap<String, Vec<Json>>) -> Arc<dyn Val> {
    let map: HashMap<Key, Value> = lists
        .iter()
        .map(|(k, v)| {
            (
                key(k),
                Value::List(Arc::new(v.iter().map(json_to_cel).collect())),
            )
        })
        .collect();
    let value = Value::Map(cel::objects::Map { map: Arc::new(map) });
    // Lists hold only text, numbers and booleans, which always convert.
    let boxed: Box<dyn Val> = value
        .try_into()
        .unwrap_or_else(|_| Box::new(cel::common::types::CelNull) as Box<dyn Val>);
    Arc::from(boxed)
}

impl CelEnv {
    /// The environment of rules with these `lists:`.
    pub fn with_lists(lists: &BTreeMap<String, Vec<Json>>) -> CelEnv {
        CelEnv {
            lists: list_value(lists),
            list_names: lists.keys().cloned().collect(),
            list_values: Arc::new(lists.clone()),
            ..CelEnv::default()
        }
    }

    pub fn compile(&self, source: &str) -> Result<Condition, Vec<CelError>> {
        if source.trim().is_empty() {
            return Err(vec![CelError {
                line: 1,
                col: 1,
                message: "empty condition".into(),
            }]);
        }
        let program = self.env.compile(source).map_err(|errs| {
            let mut out: Vec<CelError> = Vec::new();
            for e in &errs.errors {
                let (line, col) = (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize);
                let message = tidy_parse_message(&e.msg);
                // `=` leaves the parser expecting the end where the value is:
                // the hint on `=` says it all.
                if message.contains("extraneous input")
                    && out.iter().any(|p| p.message.contains("compares with `==`"))
                {
                    continue;
                }
                out.push(CelError { line, col, message });
            }
            out
        })?;
        // Comprehensions (`exists`, `all`, ...) bind their own variables, which
        // `references` lists too; only check plain expressions.
        let binds = [".all(", ".exists(", ".exists_one(", ".map(", ".filter("]
            .iter()
            .any(|m| source.contains(m));
        if !binds {
            let refs = program.references();
            let mut unknown: Vec<&str> = refs
                .variables()
                .into_iter()
                .filter(|v| !VARIABLES.contains(v))
                .collect();
            unknown.sort_unstable();
            if let Some(v) = unknown.first() {
                let col = find_identifier(source, v).map(|c| c + 1).unwrap_or(1);
                let hint = crate::suggest::suggest(v, VARIABLES.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(vec![CelError {
                    line: 1,
                    col,
                    message: format!(
                        "unknown variable `{v}`{hint}; conditions can read `lead`, `event`, `now` and `lists`"
                    ),
                }]);
            }
        }
        let checked = check::check(&program, source, &self.list_names);
        if !checked.errors.is_empty() {
            return Err(checked.errors);
        }
        let lists = program
            .references()
            .variables()
            .contains(&"lists")
            .then(|| self.lists.clone());
        let deps = Deps::of(source);
        let slot = (!deps.now && !deps.event).then(|| self.slots.fetch_add(1, Ordering::Relaxed));
        let shape = Arc::new(if deps.now {
            wake::shape(&program)
        } else {
            wake::Shape::Bounded(Vec::new())
        });
        let fast = fast::compile(program.expression(), &self.list_values).map(Arc::new);
        Ok(Condition {
            source: source.into(),
            fast,
            shape,
            program: Arc::new(program),
            label: "".into(),
            deps,
            slot,
            lists,
            numeric: checked.numeric.into(),
        })
    }

    pub fn context(&self) -> Context<'static, 'static> {
        Context::with_env(self.env.clone())
    }
}

fn tidy_parse_message(msg: &str) -> String {
    // Habits from SQL and JavaScript, said in the words of the fix.
    let token = msg
        .split_once("input '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(t, _)| t);
    match token {
        Some("AND" | "and") => return "CEL uses `&&`, not `AND`".into(),
        Some("OR" | "or") => return "CEL uses `||`, not `OR`".into(),
        Some("NOT" | "not") => return "CEL uses `!`, not `NOT`".into(),
        _ => {}
    }
    if let Some(rest) = msg.split_once("token recognition error at: '") {
        if rest.1.starts_with('=') {
            return "CEL compares with `==` (and `!=`); `=` and `===` are not CEL".into();
        }
    }
    // ANTLR's expectation lists are long and mostly noise for marketers.
    match msg.split_once(" expecting {") {
        Some((head, _)) => head.to_string(),
        None => msg.to_string(),
    }
}

fn find_identifier(source: &str, name: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(i) = source[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b'.');
        let end = at + name.len();
        let after_ok =
            end >= bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before_ok && after_ok {
            return Some(source[..at].chars().count());
        }
        from = at + name.len();
    }
    None
}

/// Why a condition did not give a clear true or false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalIssue {
    /// Read a missing key or variable: false, by design.
    Missing,
    /// Any other failure (a type mismatch, a non-boolean result): false, and
    /// worth telling the marketer.
    Error(String),
}

/// The values conditions see while one event or timer is evaluated. `lead`
/// is given at each evaluation, since evaluating changes it.
pub struct Scope<'a> {
    now: CelTimestamp,
    event: Option<EventView<'a>>,
}

struct Resolver<'a, 's> {
    scope: &'s Scope<'a>,
    lead: LeadView<'s>,
    lists: Option<&'s dyn Val>,
}

impl VariableResolver for Resolver<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "lead" => Some(CowVal::Borrowed(&self.lead)),
            "event" => self
                .scope
                .event
                .as_ref()
                .map(|e| CowVal::Borrowed(e as &dyn Val)),
            "now" => Some(CowVal::Borrowed(&self.scope.now)),
            "lists" => self.lists.map(CowVal::Borrowed),
            _ => None,
        }
    }
}

impl<'a> Scope<'a> {
    pub fn new(now: Timestamp, event: Option<&'a Event>) -> Scope<'a> {
        Scope {
            now: CelTimestamp::from(now.fixed_offset()),
            event: event.map(EventView),
        }
    }

    /// The event being applied, if any.
    pub fn event(&self) -> Option<&'a Event> {
        self.event.as_ref().map(|e| e.0)
    }

    pub fn eval(
        &self,
        cond: &Condition,
        ctx: &Context,
        lead: &LeadState,
    ) -> Result<bool, EvalIssue> {
        if let Some(f) = &cond.fast {
            match f.eval(lead, self.event()) {
                fast::Tri::True => return Ok(true),
                fast::Tri::False => return Ok(false),
                fast::Tri::Missing => return Err(EvalIssue::Missing),
                fast::Tri::Unknown => {}
            }
        }
        self.interpret(cond, ctx, lead)
    }

    /// The condition's value by the `cel` interpreter alone.
    pub fn interpret(
        &self,
        cond: &Condition,
        ctx: &Context,
        lead: &LeadState,
    ) -> Result<bool, EvalIssue> {
        let resolver = Resolver {
            scope: self,
            lead: LeadView(lead),
            lists: cond.lists.as_deref(),
        };
        let mut scope = ctx.new_inner_scope();
        scope.set_variable_resolver(&resolver);
        match cond.program.execute(&scope) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalIssue::Error(format!(
                "the condition gave {:?}, not true or false",
                other
            ))),
            Err(ExecutionError::NoSuchKey(_)) | Err(ExecutionError::UndeclaredReference(_)) => {
                Err(EvalIssue::Missing)
            }
            Err(e) => Err(EvalIssue::Error(e.to_string())),
        }
    }
}

fn key(s: &str) -> Key {
    Key::String(Arc::new(s.to_string()))
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

pub fn json_to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(x) => s(x),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(m) => object_to_cel(m),
    }
}

fn object_to_cel(m: &serde_json::Map<String, Json>) -> Value {
    let map: HashMap<Key, Value> = m.iter().map(|(k, v)| (key(k), json_to_cel(v))).collect();
    Value::Map(cel::objects::Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time;
    use serde_json::json;

    fn lead() -> LeadState {
        let mut l = LeadState::new("u1", time::parse("2026-01-01T00:00:00Z").unwrap());
        l.score = 60;
        l.attributes = json!({"industry": "software", "employees": 1500})
            .as_object()
            .unwrap()
            .clone();
        l
    }

    fn eval(src: &str, now: &str) -> Result<bool, EvalIssue> {
        let env = CelEnv::default();
        let c = env.compile(src).unwrap();
        let ev = Event::from_json(
            &json!({"id":"e1","lead":"u1","type":"page_viewed","at":now,"properties":{"path":"/pricing/x"}}),
            None,
        )
        .unwrap();
        let scope = Scope::new(time::parse(now).unwrap(), Some(&ev));
        scope.eval(&c, &env.context(), &lead())
    }

    #[test]
    fn reads_lead_event_and_now() {
        let now = "2026-02-15T00:00:00Z";
        assert_eq!(eval("lead.score >= 50", now), Ok(true));
        assert_eq!(
            eval(r#"event.properties.path.startsWith("/pricing")"#, now),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"lead.attributes.industry in ["software", "fintech"]"#,
                now
            ),
            Ok(true)
        );
        assert_eq!(
            eval(r#"now - lead.last_activity_at > duration("720h")"#, now),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"now - lead.last_activity_at > duration("720h")"#,
                "2026-01-02T00:00:00Z"
            ),
            Ok(false)
        );
        assert_eq!(eval("lead.attributes.employees >= 1000", now), Ok(true));
        assert_eq!(eval(r#"lead.owner == """#, now), Ok(true));
    }

    #[test]
    fn string_extension_functions() {
        let now = "2026-02-15T00:00:00Z";
        assert_eq!(
            eval(
                r#"lead.attributes.industry.upperAscii().lowerAscii() == "software""#,
                now
            ),
            Ok(true)
        );
        assert_eq!(eval(r#"" a ".trim() == "a""#, now), Ok(true));
    }

    #[test]
    fn missing_keys_are_false_not_errors() {
        let now = "2026-02-15T00:00:00Z";
        assert_eq!(
            eval("lead.attributes.nothing == 1", now),
            Err(EvalIssue::Missing)
        );
        assert!(matches!(
            eval("lead.attributes.industry > 3", now),
            Err(EvalIssue::Error(_))
        ));
        assert!(matches!(
            eval("lead.score + 1", now),
            Err(EvalIssue::Error(_))
        ));
    }

    #[test]
    fn deps_over_approximate_what_a_condition_reads() {
        let d = Deps::of(r#"lead.attributes.industry in ["software"] && lead.email != """#);
        assert_eq!(
            (d.now, d.event, d.lead),
            (false, false, fields::ATTRIBUTES | fields::EMAIL)
        );
        let d = Deps::of("now - lead.last_activity_at > duration('1h')");
        assert!(d.now && d.lead == fields::LAST_ACTIVITY_AT);
        assert_eq!(Deps::of("has(lead.x)").lead, fields::ALL);
        assert_eq!(Deps::of("size(lead) > 0").lead, fields::ALL);
        assert!(Deps::of("event.type == 'x'").event);
        assert!(!Deps::of("lead.attributes.event == 1").event);
        // Words in strings are not reads; triple quotes fall back to the safe side.
        assert_eq!(
            Deps::of(r#"lead.stage in ["lead", 'now']"#),
            Deps {
                now: false,
                event: false,
                lead: fields::STAGE
            }
        );
        assert_eq!(Deps::of(r#"lead.stage == "a\"lead" "#).lead, fields::STAGE);
        assert_eq!(Deps::of("lead.stage == '''lead'''").lead, fields::ALL);
        assert!(!Deps::of("lead.score > 1").may_change(fields::ATTRIBUTES));
        assert!(Deps::of("lead.score > 1").may_change(fields::SCORE));
    }

    #[test]
    fn compile_errors_have_positions() {
        let env = CelEnv::default();
        let e = env.compile("lead.score >= ").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 15));
        let e = env.compile("leads.score > 1").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 1));
        assert!(
            e[0].message.contains("did you mean `lead`"),
            "{}",
            e[0].message
        );
        assert!(env.compile("[1, 2].exists(x, x > 1)").is_ok());
    }

    #[test]
    fn sql_and_javascript_habits_get_the_fix() {
        let env = CelEnv::default();
        let first = |src: &str| {
            let e = env.compile(src).unwrap_err();
            (e.len(), e[0].col, e[0].message.clone())
        };
        assert_eq!(
            first("lead.score >= 60 AND lead.fit > 1"),
            (1, 18, "CEL uses `&&`, not `AND`".into())
        );
        assert_eq!(
            first("lead.score > 1 OR lead.fit > 1").2,
            "CEL uses `||`, not `OR`"
        );
        let (n, col, msg) = first("lead.stage = 'mql'");
        assert_eq!((n, col), (1, 12));
        assert!(msg.contains("CEL compares with `==`"), "{msg}");
        assert!(first("lead.stage === 'mql'").2.contains("`==`"));
    }
}
