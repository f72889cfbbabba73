//! CEL conditions: compiled once when rules load, evaluated against `lead`,
//! `event` and `now`.
//!
//! Values are converted into CEL lazily: a condition that never reads `lead`
//! does not pay for converting it, and a lead is converted again only after
//! it changed.

use crate::model::{time::Timestamp, Event, LeadState};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, Program, Value};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;

/// The variables a condition may read.
pub const VARIABLES: [&str; 3] = ["lead", "event", "now"];

/// A compiled CEL condition.
#[derive(Clone)]
pub struct Condition {
    pub source: Arc<str>,
    program: Arc<Program>,
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
}

impl Default for CelEnv {
    fn default() -> Self {
        CelEnv {
            env: Arc::new(Env::stdlib()),
        }
    }
}

impl CelEnv {
    pub fn compile(&self, source: &str) -> Result<Condition, Vec<CelError>> {
        if source.trim().is_empty() {
            return Err(vec![CelError {
                line: 1,
                col: 1,
                message: "empty condition".into(),
            }]);
        }
        let program = self.env.compile(source).map_err(|errs| {
            errs.errors
                .iter()
                .map(|e| CelError {
                    line: e.pos.0.max(1) as usize,
                    col: e.pos.1.max(1) as usize,
                    message: tidy_parse_message(&e.msg),
                })
                .collect::<Vec<_>>()
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
                let hint = crate::rules::suggest(v, VARIABLES.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(vec![CelError {
                    line: 1,
                    col,
                    message: format!(
                        "unknown variable `{v}`{hint}; conditions can read `lead`, `event` and `now`"
                    ),
                }]);
            }
        }
        Ok(Condition {
            source: source.into(),
            program: Arc::new(program),
        })
    }

    pub fn context(&self) -> Context<'static, 'static> {
        Context::with_env(self.env.clone())
    }
}

fn tidy_parse_message(msg: &str) -> String {
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
        let before_ok = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b'.');
        let end = at + name.len();
        let after_ok = end >= bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
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

/// The values conditions see while one event or timer is evaluated.
pub struct Scope {
    now: Box<dyn Val>,
    event: Option<Box<dyn Val>>,
    lead: Option<Box<dyn Val>>,
}

struct Resolver<'a> {
    now: &'a dyn Val,
    event: Option<&'a dyn Val>,
    lead: &'a dyn Val,
}

impl VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "lead" => Some(CowVal::Borrowed(self.lead)),
            "event" => self.event.map(CowVal::Borrowed),
            "now" => Some(CowVal::Borrowed(self.now)),
            _ => None,
        }
    }
}

impl Scope {
    pub fn new(now: Timestamp, event: Option<&Event>) -> Scope {
        Scope {
            now: to_val(Value::Timestamp(now.fixed_offset())),
            event: event.map(|e| to_val(event_value(e))),
            lead: None,
        }
    }

    /// Call after changing the lead, so conditions see the change.
    pub fn lead_changed(&mut self) {
        self.lead = None;
    }

    pub fn eval(&mut self, cond: &Condition, ctx: &Context, lead: &LeadState) -> Result<bool, EvalIssue> {
        let lead_val: &dyn Val = &**self.lead.get_or_insert_with(|| to_val(lead_value(lead)));
        let resolver = Resolver { now: &*self.now, event: self.event.as_deref(), lead: lead_val };
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

fn to_val(v: Value) -> Box<dyn Val> {
    // Conversion of plain data (no functions) cannot fail.
    v.try_into().unwrap_or_else(|_| Box::new(cel::common::types::CelNull) as Box<dyn Val>)
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

fn lead_value(l: &LeadState) -> Value {
    let mut m: HashMap<Key, Value> = HashMap::with_capacity(10);
    m.insert(key("id"), s(&l.id));
    m.insert(key("email"), s(&l.email));
    m.insert(key("score"), Value::Int(l.score));
    m.insert(key("fit"), Value::Int(l.fit));
    m.insert(key("stage"), s(l.stage.as_str()));
    m.insert(key("owner"), s(l.owner.as_deref().unwrap_or("")));
    m.insert(key("consent"), s(l.consent.as_str()));
    m.insert(key("attributes"), object_to_cel(&l.attributes));
    m.insert(key("created_at"), Value::Timestamp(l.created_at.fixed_offset()));
    m.insert(key("last_activity_at"), Value::Timestamp(l.last_activity_at.fixed_offset()));
    Value::Map(cel::objects::Map { map: Arc::new(m) })
}

fn event_value(e: &Event) -> Value {
    let mut m: HashMap<Key, Value> = HashMap::with_capacity(5);
    m.insert(key("id"), s(&e.id));
    m.insert(key("type"), s(&e.kind));
    m.insert(key("at"), Value::Timestamp(e.at.fixed_offset()));
    m.insert(key("properties"), object_to_cel(&e.properties));
    m.insert(key("traits"), object_to_cel(&e.traits));
    Value::Map(cel::objects::Map { map: Arc::new(m) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time;
    use serde_json::json;

    fn lead() -> LeadState {
        let mut l = LeadState::new("u1", time::parse("2026-01-01T00:00:00Z").unwrap());
        l.score = 60;
        l.attributes = json!({"industry": "software", "employees": 1500}).as_object().unwrap().clone();
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
        let mut scope = Scope::new(time::parse(now).unwrap(), Some(&ev));
        scope.eval(&c, &env.context(), &lead())
    }

    #[test]
    fn reads_lead_event_and_now() {
        let now = "2026-02-15T00:00:00Z";
        assert_eq!(eval("lead.score >= 50", now), Ok(true));
        assert_eq!(eval(r#"event.properties.path.startsWith("/pricing")"#, now), Ok(true));
        assert_eq!(eval(r#"lead.attributes.industry in ["software", "fintech"]"#, now), Ok(true));
        assert_eq!(eval(r#"now - lead.last_activity_at > duration("720h")"#, now), Ok(true));
        assert_eq!(eval(r#"now - lead.last_activity_at > duration("720h")"#, "2026-01-02T00:00:00Z"), Ok(false));
        assert_eq!(eval("lead.attributes.employees >= 1000", now), Ok(true));
        assert_eq!(eval(r#"lead.owner == """#, now), Ok(true));
    }

    #[test]
    fn missing_keys_are_false_not_errors() {
        let now = "2026-02-15T00:00:00Z";
        assert_eq!(eval("lead.attributes.nothing == 1", now), Err(EvalIssue::Missing));
        assert!(matches!(eval("lead.attributes.industry > 3", now), Err(EvalIssue::Error(_))));
        assert!(matches!(eval("lead.score + 1", now), Err(EvalIssue::Error(_))));
    }

    #[test]
    fn compile_errors_have_positions() {
        let env = CelEnv::default();
        let e = env.compile("lead.score >= ").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 15));
        let e = env.compile("leads.score > 1").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 1));
        assert!(e[0].message.contains("did you mean `lead`"), "{}", e[0].message);
        assert!(env.compile("[1, 2].exists(x, x > 1)").is_ok());
    }
}
