//! The common shapes of condition, compiled to a small tree that reads the
//! lead and the event directly: field comparisons with a literal, `in` a
//! literal list or one of the rules' `lists`, `startsWith` / `endsWith` /
//! `contains`, `"key" in object`, and `&&`, `||`, `!` over them. Names such
//! as `event.properties.path` are resolved once, here, instead of by the
//! interpreter's variable and map lookups on every evaluation.
//!
//! The tree answers only when it is sure to give what the `cel` interpreter
//! gives: true, false, or "a key is missing" (which conditions treat as
//! false). Anything else it cannot vouch for — a comparison across types, a
//! number compared with text, a function it does not know — is
//! [`Tri::Unknown`], and the caller runs the interpreter. So CEL's semantics
//! stay exactly the interpreter's, including its error cases; the
//! differential test in this file checks that on generated conditions.
//!
//! `&&` and `||` follow the interpreter's rules for errors: `x && false` is
//! false and `x || true` is true whatever `x` gives, a missing key on one
//! side and true (for `&&`) on the other is a missing key.

use crate::model::{Event, LeadState};
use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// What a compiled part gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    /// A key or variable is missing: the interpreter's `NoSuchKey` or
    /// `UndeclaredReference`.
    Missing,
    /// Not decided here: ask the interpreter.
    Unknown,
}

impl From<bool> for Tri {
    fn from(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Const(bool),
    /// `field OP literal` (a literal on the left is flipped to the right).
    Cmp(Src, Op, Lit),
    /// `field.startsWith("…")` and its kin.
    Text(Src, TextOp, Box<str>),
    /// `field in [literals]` or `field in lists.name`.
    In(Src, Box<[Lit]>),
    /// `"key" in object`.
    HasKey(Box<str>, Src),
    /// A boolean field on its own.
    Field(Src),
    /// Any other expression: the interpreter decides it.
    Slow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn of(name: &str) -> Option<Op> {
        Some(match name {
            operators::EQUALS => Op::Eq,
            operators::NOT_EQUALS => Op::Ne,
            operators::LESS => Op::Lt,
            operators::LESS_EQUALS => Op::Le,
            operators::GREATER => Op::Gt,
            operators::GREATER_EQUALS => Op::Ge,
            _ => return None,
        })
    }

    /// `lit OP field` as `field OP' lit`.
    fn flipped(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            same => same,
        }
    }

    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOp {
    StartsWith,
    EndsWith,
    Contains,
}

/// A literal, as CEL types it.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(Box<str>),
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Null,
}

impl Lit {
    fn of(l: &LiteralValue) -> Option<Lit> {
        Some(match l {
            LiteralValue::String(s) => Lit::Str(s.inner().into()),
            LiteralValue::Int(i) => Lit::Int(*i.inner()),
            LiteralValue::UInt(u) => Lit::UInt(*u.inner()),
            LiteralValue::Double(d) => Lit::Double(*d.inner()),
            LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
            LiteralValue::Null => Lit::Null,
            LiteralValue::Bytes(_) => return None,
        })
    }

    /// A value of the rules' `lists` as CEL converts it (`json_to_cel`).
    fn of_json(v: &Json) -> Option<Lit> {
        Some(match v {
            Json::Null => Lit::Null,
            Json::Bool(b) => Lit::Bool(*b),
            Json::String(s) => Lit::Str(s.as_str().into()),
            Json::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Lit::Int(i),
                (None, Some(u)) => Lit::UInt(u),
                _ => Lit::Double(n.as_f64()?),
            },
            Json::Array(_) | Json::Object(_) => return None,
        })
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Src {
    Lead(LeadField),
    /// `lead.attributes` and keys below it (none: the object itself).
    Attributes(Box<[Box<str>]>),
    Event(EventField),
    Properties(Box<[Box<str>]>),
    Traits(Box<[Box<str>]>),
}

/// The lead's fields that are plain values (timestamps are left to CEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadField {
    Id,
    Email,
    Score,
    Fit,
    Stage,
    Owner,
    Consent,
    RecycledCount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventField {
    Id,
    Type,
    Lead,
}

/// A value read, borrowed from the lead or the event.
enum Got<'a> {
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Null,
    Object(&'a Map<String, Json>),
    /// A list: left to CEL.
    Other,
}

fn got(v: &Json) -> Got<'_> {
    match v {
        Json::Null => Got::Null,
        Json::Bool(b) => Got::Bool(*b),
        Json::String(s) => Got::Str(s),
        // As the views convert numbers (views::json).
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Got::Int(i),
            (None, Some(u)) => Got::UInt(u),
            _ => n.as_f64().map_or(Got::Other, Got::Double),
        },
        Json::Object(m) => Got::Object(m),
        Json::Array(_) => Got::Other,
    }
}

/// Follows `keys` down from `object`: a missing key is `Missing`; a key
/// under something that is not an object is left to CEL.
fn walk<'a>(object: &'a Map<String, Json>, keys: &[Box<str>]) -> Result<Got<'a>, Tri> {
    let Some((last, above)) = keys.split_last() else {
        return Ok(Got::Object(object));
    };
    let mut map = object;
    for k in above {
        match map.get(&**k) {
            Some(Json::Object(m)) => map = m,
            Some(_) => return Err(Tri::Unknown),
            None => return Err(Tri::Missing),
        }
    }
    map.get(&**last).map(got).ok_or(Tri::Missing)
}

impl Src {
    fn read<'a>(&self, lead: &'a LeadState, event: Option<&'a Event>) -> Result<Got<'a>, Tri> {
        // No event (a timer, a tick): CEL finds no variable `event`.
        let event = || event.ok_or(Tri::Missing);
        Ok(match self {
            Src::Lead(f) => match f {
                LeadField::Id => Got::Str(&lead.id),
                LeadField::Email => Got::Str(&lead.email),
                LeadField::Score => Got::Int(lead.score),
                LeadField::Fit => Got::Int(lead.fit),
                LeadField::Stage => Got::Str(lead.stage.as_str()),
                LeadField::Owner => Got::Str(lead.owner.as_deref().unwrap_or("")),
                LeadField::Consent => Got::Str(lead.consent.as_str()),
                LeadField::RecycledCount => Got::Int(i64::from(lead.cycle)),
            },
            Src::Attributes(keys) => return walk(&lead.attributes, keys),
            Src::Event(f) => {
                let e = event()?;
                Got::Str(match f {
                    EventField::Id => &e.id,
                    EventField::Type => &e.kind,
                    EventField::Lead => &e.lead,
                })
            }
            Src::Properties(keys) => return walk(&event()?.properties, keys),
            Src::Traits(keys) => return walk(&event()?.traits, keys),
        })
    }
}

fn compare(v: &Got, op: Op, lit: &Lit) -> Tri {
    let ordering = match (v, lit) {
        (Got::Str(a), Lit::Str(b)) => (*a).cmp(&**b),
        (Got::Int(a), Lit::Int(b)) => a.cmp(b),
        (Got::UInt(a), Lit::UInt(b)) => a.cmp(b),
        (Got::Double(a), Lit::Double(b)) => match a.partial_cmp(b) {
            Some(o) => o,
            None => return Tri::Unknown,
        },
        (Got::Bool(a), Lit::Bool(b)) if matches!(op, Op::Eq | Op::Ne) => a.cmp(b),
        (Got::Null, Lit::Null) if matches!(op, Op::Eq | Op::Ne) => std::cmp::Ordering::Equal,
        // Across types CEL has its own rules (numbers compare across
        // kinds, some pairs are errors): the interpreter's call.
        _ => return Tri::Unknown,
    };
    op.holds(ordering).into()
}

impl Node {
    /// The condition's value for this lead and event, if sure.
    pub fn eval(&self, lead: &LeadState, event: Option<&Event>) -> Tri {
        match self {
            Node::And(a, b) => match a.eval(lead, event) {
                Tri::False => Tri::False,
                Tri::True => b.eval(lead, event),
                left => match (left, b.eval(lead, event)) {
                    (_, Tri::False) => Tri::False,
                    (Tri::Missing, Tri::True | Tri::Missing) => Tri::Missing,
                    _ => Tri::Unknown,
                },
            },
            Node::Or(a, b) => match a.eval(lead, event) {
                Tri::True => Tri::True,
                Tri::False => b.eval(lead, event),
                left => match (left, b.eval(lead, event)) {
                    (_, Tri::True) => Tri::True,
                    (Tri::Missing, Tri::False | Tri::Missing) => Tri::Missing,
                    _ => Tri::Unknown,
                },
            },
            Node::Not(a) => match a.eval(lead, event) {
                Tri::True => Tri::False,
                Tri::False => Tri::True,
                other => other,
            },
            Node::Const(b) => (*b).into(),
            Node::Cmp(src, op, lit) => match src.read(lead, event) {
                Ok(v) => compare(&v, *op, lit),
                Err(t) => t,
            },
            Node::Text(src, op, arg) => match src.read(lead, event) {
                Ok(Got::Str(s)) => match op {
                    TextOp::StartsWith => s.starts_with(&**arg),
                    TextOp::EndsWith => s.ends_with(&**arg),
                    TextOp::Contains => s.contains(&**arg),
                }
                .into(),
                Ok(_) => Tri::Unknown,
                Err(t) => t,
            },
            Node::In(src, list) => match src.read(lead, event) {
                Ok(v) => {
                    let mut found = false;
                    for lit in list.iter() {
                        match compare(&v, Op::Eq, lit) {
                            Tri::True => found = true,
                            Tri::False => {}
                            // A list of mixed kinds: CEL's equality rules.
                            _ => return Tri::Unknown,
                        }
                    }
                    found.into()
                }
                Err(t) => t,
            },
            Node::HasKey(key, src) => match src.read(lead, event) {
                Ok(Got::Object(m)) => m.contains_key(&**key).into(),
                Ok(_) => Tri::Unknown,
                Err(t) => t,
            },
            Node::Field(src) => match src.read(lead, event) {
                Ok(Got::Bool(b)) => b.into(),
                Ok(_) => Tri::Unknown,
                Err(t) => t,
            },
            Node::Slow => Tri::Unknown,
        }
    }

    /// Whether any part is decided here (a tree of only `Slow` is not worth
    /// keeping).
    fn decides_something(&self) -> bool {
        match self {
            Node::And(a, b) | Node::Or(a, b) => a.decides_something() || b.decides_something(),
            Node::Not(a) => a.decides_something(),
            Node::Slow => false,
            _ => true,
        }
    }
}

/// The fast tree of a parsed condition, if any part of it has a fast shape.
pub fn compile(e: &IdedExpr, lists: &BTreeMap<String, Vec<Json>>) -> Option<Node> {
    let node = node(e, lists);
    node.decides_something().then_some(node)
}

fn node(e: &IdedExpr, lists: &BTreeMap<String, Vec<Json>>) -> Node {
    leaf(e, lists).unwrap_or(Node::Slow)
}

fn leaf(e: &IdedExpr, lists: &BTreeMap<String, Vec<Json>>) -> Option<Node> {
    match &e.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Node::Const(*b.inner())),
        Expr::Select(s) if !s.test => Some(Node::Field(src(e)?)),
        Expr::Call(c) => {
            let name = c.func_name.as_str();
            match (&c.target, c.args.as_slice()) {
                (None, [a, b]) if name == operators::LOGICAL_AND => Some(Node::And(
                    Box::new(node(a, lists)),
                    Box::new(node(b, lists)),
                )),
                (None, [a, b]) if name == operators::LOGICAL_OR => {
                    Some(Node::Or(Box::new(node(a, lists)), Box::new(node(b, lists))))
                }
                (None, [a]) if name == operators::LOGICAL_NOT => {
                    Some(Node::Not(Box::new(node(a, lists))))
                }
                (None, [a, b]) if name == operators::IN => {
                    if let Expr::Literal(LiteralValue::String(key)) = &a.expr {
                        return Some(Node::HasKey(key.inner().into(), object_src(b)?));
                    }
                    Some(Node::In(src(a)?, list(b, lists)?))
                }
                (None, [a, b]) => {
                    let op = Op::of(name)?;
                    match (&a.expr, &b.expr) {
                        (_, Expr::Literal(l)) => Some(Node::Cmp(src(a)?, op, Lit::of(l)?)),
                        (Expr::Literal(l), _) => {
                            Some(Node::Cmp(src(b)?, op.flipped(), Lit::of(l)?))
                        }
                        _ => None,
                    }
                }
                (Some(target), [arg]) => {
                    let op = match name {
                        "startsWith" => TextOp::StartsWith,
                        "endsWith" => TextOp::EndsWith,
                        "contains" => TextOp::Contains,
                        _ => return None,
                    };
                    let Expr::Literal(LiteralValue::String(arg)) = &arg.expr else {
                        return None;
                    };
                    Some(Node::Text(src(target)?, op, arg.inner().into()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A literal list, or `lists.name`.
fn list(e: &IdedExpr, lists: &BTreeMap<String, Vec<Json>>) -> Option<Box<[Lit]>> {
    match &e.expr {
        Expr::List(l) if l.optional_indices.is_empty() => l
            .elements
            .iter()
            .map(|el| match &el.expr {
                Expr::Literal(lit) => Lit::of(lit),
                _ => None,
            })
            .collect(),
        Expr::Select(s) if !s.test && matches!(&s.operand.expr, Expr::Ident(v) if v == "lists") => {
            lists.get(&s.field)?.iter().map(Lit::of_json).collect()
        }
        _ => None,
    }
}

/// `lead.x`, `lead.attributes.a.b`, `event.type`, `event.properties.a`,
/// with `["key"]` allowed for any key below the objects.
fn src(e: &IdedExpr) -> Option<Src> {
    let mut keys = Vec::new();
    let root = path(e, &mut keys)?;
    keys.reverse();
    let mut keys = keys.into_iter();
    let first = keys.next()?;
    let rest = || keys.clone().collect::<Box<[Box<str>]>>();
    Some(match (root, &*first) {
        ("lead", "attributes") => Src::Attributes(rest()),
        ("event", "properties") => Src::Properties(rest()),
        ("event", "traits") => Src::Traits(rest()),
        (_, _) if keys.len() > 0 => return None,
        ("lead", field) => Src::Lead(match field {
            "id" => LeadField::Id,
            "email" => LeadField::Email,
            "score" => LeadField::Score,
            "fit" => LeadField::Fit,
            "stage" => LeadField::Stage,
            "owner" => LeadField::Owner,
            "consent" => LeadField::Consent,
            "recycled_count" => LeadField::RecycledCount,
            _ => return None,
        }),
        ("event", field) => Src::Event(match field {
            "id" => EventField::Id,
            "type" => EventField::Type,
            "lead" => EventField::Lead,
            _ => return None,
        }),
        _ => return None,
    })
}

/// An object: `lead.attributes…`, `event.properties…`, `event.traits…`.
fn object_src(e: &IdedExpr) -> Option<Src> {
    src(e).filter(|s| matches!(s, Src::Attributes(_) | Src::Properties(_) | Src::Traits(_)))
}

/// The root variable of a chain of selects and string indexes, with the
/// keys pushed innermost last.
fn path<'e>(e: &'e IdedExpr, keys: &mut Vec<Box<str>>) -> Option<&'e str> {
    match &e.expr {
        Expr::Ident(name) if name == "lead" || name == "event" => Some(name),
        Expr::Select(s) if !s.test => {
            keys.push(s.field.as_str().into());
            path(&s.operand, keys)
        }
        Expr::Call(c) if c.func_name == operators::INDEX && c.target.is_none() => {
            let [operand, index] = c.args.as_slice() else {
                return None;
            };
            let Expr::Literal(LiteralValue::String(key)) = &index.expr else {
                return None;
            };
            keys.push(key.inner().into());
            path(operand, keys)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The differential test: generated conditions over generated leads and
    //! events, the fast tree against the `cel` interpreter.
    use super::Tri;
    use crate::cel::{CelEnv, EvalIssue, Scope};
    use crate::model::{time, Event, LeadState, Stage};
    use serde_json::{json, Value as Json};
    use std::collections::BTreeMap;

    /// The workload generator's seeded SplitMix64, so a failure replays.
    struct Rng(crate::sim::gen::Rng);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n as u64) as usize
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const FIELDS: &[&str] = &[
        "lead.score",
        "lead.fit",
        "lead.stage",
        "lead.owner",
        "lead.email",
        "lead.consent",
        "lead.recycled_count",
        "lead.attributes.industry",
        "lead.attributes.employees",
        "lead.attributes.vip",
        "lead.attributes.ratio",
        "lead.attributes.big",
        "lead.attributes.tags",
        "lead.attributes.nested.x",
        "lead.attributes.nested",
        "lead.attributes.missing",
        r#"lead.attributes["industry"]"#,
        "event.type",
        "event.id",
        "event.properties.path",
        "event.properties.form",
        "event.properties.n",
        "event.properties.ok",
        "event.traits.plan",
        "event.traits.seats",
    ];
    const LITERALS: &[&str] = &[
        r#""software""#,
        r#""/pricing""#,
        r#""""#,
        r#""mql""#,
        r#""demo""#,
        r#""page_viewed""#,
        "0",
        "5",
        "60",
        "1000",
        "-3",
        "5u",
        "1.5",
        "0.0",
        "true",
        "false",
        "null",
    ];
    const OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];
    const SLOW: &[&str] = &[
        "size(lead.attributes) > 2",
        r#"lead.attributes.industry.lowerAscii() == "software""#,
        r#"now > timestamp("2026-01-10T00:00:00Z")"#,
        "(lead.score > 10 ? true : false)",
        "lead.score + 1 > 10",
        "lead.attributes.tags.exists(t, t == \"a\")",
    ];

    fn condition(r: &mut Rng, depth: u32) -> String {
        let leaf = depth == 0 || r.below(3) == 0;
        if !leaf {
            let a = condition(r, depth - 1);
            let b = condition(r, depth - 1);
            return match r.below(5) {
                0 | 1 => format!("({a} && {b})"),
                2 | 3 => format!("({a} || {b})"),
                _ => format!("!({a})"),
            };
        }
        let f = *r.pick(FIELDS);
        match r.below(10) {
            0..=3 => format!("{f} {} {}", r.pick(OPS), r.pick(LITERALS)),
            4 => format!("{} {} {f}", r.pick(LITERALS), r.pick(OPS)),
            5 => format!(
                "{f}.{}({})",
                r.pick(&["startsWith", "endsWith", "contains"]),
                r.pick(&[r#""/p""#, r#""ware""#, r#""""#, r#""x""#])
            ),
            6 => {
                let n = r.below(4);
                let items: Vec<&str> = (0..n).map(|_| *r.pick(LITERALS)).collect();
                format!("{f} in [{}]", items.join(", "))
            }
            7 => format!("{f} in lists.{}", r.pick(&["industries", "sizes", "mixed"])),
            8 => format!(
                "{} in {}",
                r.pick(&[r#""industry""#, r#""x""#, r#""path""#]),
                r.pick(&[
                    "lead.attributes",
                    "event.properties",
                    "event.traits",
                    "lead.attributes.nested"
                ])
            ),
            _ => match r.below(3) {
                0 => f.to_string(),
                1 => r.pick(&["true", "false"]).to_string(),
                _ => r.pick(SLOW).to_string(),
            },
        }
    }

    fn value(r: &mut Rng, kinds: &[Json]) -> Option<Json> {
        let i = r.below(kinds.len() + 1);
        kinds.get(i).cloned()
    }

    fn lead(r: &mut Rng) -> LeadState {
        let mut l = LeadState::new("u1", time::parse("2026-01-01T00:00:00Z").unwrap());
        l.score = *r.pick(&[0, 5, 60, 1000, -3]);
        l.fit = *r.pick(&[0, 20]);
        l.stage = *r.pick(&[Stage::Subscriber, Stage::Mql, Stage::Sql]);
        l.owner = r.pick(&[None, Some("ana".to_string())]).clone();
        l.email = r.pick(&["", "a@b.example"]).to_string();
        let mut attrs = serde_json::Map::new();
        let mut put = |r: &mut Rng, k: &str, kinds: &[Json]| {
            if let Some(v) = value(r, kinds) {
                attrs.insert(k.into(), v);
            }
        };
        put(
            r,
            "industry",
            &[json!("software"), json!("Software"), json!(5), json!(null)],
        );
        put(
            r,
            "employees",
            &[json!(1000), json!("1,500"), json!(1000.0), json!(5u64)],
        );
        put(r, "vip", &[json!(true), json!(false), json!("yes")]);
        put(r, "ratio", &[json!(1.5), json!(0.0), json!(-0.0), json!(2)]);
        put(r, "big", &[json!(u64::MAX), json!(5)]);
        put(r, "tags", &[json!(["a", "b"]), json!([])]);
        put(
            r,
            "nested",
            &[
                json!({"x": 5}),
                json!({"x": "software"}),
                json!("flat"),
                json!({}),
            ],
        );
        l.attributes = attrs;
        l
    }

    fn event(r: &mut Rng) -> Option<Event> {
        if r.below(5) == 0 {
            return None;
        }
        let mut props = serde_json::Map::new();
        for (k, kinds) in [
            ("path", vec![json!("/pricing/x"), json!("/docs"), json!(7)]),
            ("form", vec![json!("demo"), json!("")]),
            ("n", vec![json!(5), json!(1.5), json!("5")]),
            ("ok", vec![json!(true), json!(0)]),
        ] {
            if let Some(v) = value(r, &kinds) {
                props.insert(k.into(), v);
            }
        }
        let plan = value(r, &[json!("pro"), json!(3)]);
        let traits = match plan {
            Some(p) => json!({"plan": p, "seats": 5}),
            None => json!({}),
        };
        let kind = *r.pick(&["page_viewed", "form_submitted"]);
        Some(
            Event::from_json(
                &json!({"id": "e1", "lead": "u1", "type": kind, "at": "2026-01-15T00:00:00Z",
                        "properties": props, "traits": traits}),
                None,
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_fast_tree_agrees_with_the_interpreter_on_generated_conditions() {
        let lists: BTreeMap<String, Vec<Json>> = [
            (
                "industries".to_string(),
                vec![json!("software"), json!("fintech")],
            ),
            ("sizes".to_string(), vec![json!(5), json!(1000)]),
            (
                "mixed".to_string(),
                vec![json!("software"), json!(5), json!(1.5)],
            ),
        ]
        .into_iter()
        .collect();
        let env = CelEnv::with_lists(&lists);
        let ctx = env.context();
        let mut r = Rng(crate::sim::gen::Rng(7));
        let (mut compiled, mut with_fast, mut runs) = (0, 0, 0);
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..3_000 {
            let source = condition(&mut r, 3);
            let Ok(cond) = env.compile(&source) else {
                continue;
            };
            compiled += 1;
            let Some(fast) = cond.fast() else { continue };
            with_fast += 1;
            for _ in 0..20 {
                let (lead, event) = (lead(&mut r), event(&mut r));
                let scope =
                    Scope::new(time::parse("2026-01-20T00:00:00Z").unwrap(), event.as_ref());
                let interpreted = scope.interpret(&cond, &ctx, &lead);
                let got = fast.eval(&lead, event.as_ref());
                runs += 1;
                let agrees = match got {
                    Tri::True => interpreted == Ok(true),
                    Tri::False => interpreted == Ok(false),
                    Tri::Missing => interpreted == Err(EvalIssue::Missing),
                    Tri::Unknown => true,
                };
                assert!(
                    agrees,
                    "`{source}`: fast {got:?}, interpreter {interpreted:?}\nlead {:?}\nevent {:?}",
                    lead.attributes,
                    event.as_ref().map(|e| (&e.kind, &e.properties, &e.traits))
                );
                *outcomes.entry(format!("{got:?}")).or_insert(0) += 1;
                // Through `eval`, the answer is the interpreter's too.
                assert_eq!(
                    scope.eval(&cond, &ctx, &lead).is_ok_and(|b| b),
                    interpreted.as_ref().is_ok_and(|b| *b),
                    "`{source}`"
                );
            }
        }
        // The generator must exercise the fast tree, not only the fallback.
        assert!(
            compiled > 2_000,
            "only {compiled} of 3,000 conditions compiled"
        );
        assert!(
            with_fast * 10 > compiled * 8,
            "{with_fast} of {compiled} have a fast tree"
        );
        // Many generated comparisons cross types (left to the interpreter on
        // purpose); each of the fast tree's answers must still come often.
        for answer in ["True", "False", "Missing", "Unknown"] {
            let n = outcomes.get(answer).copied().unwrap_or(0);
            assert!(
                n * 10 > runs,
                "{answer}: {n} of {runs} evaluations ({outcomes:?})"
            );
        }
    }

    #[test]
    fn the_example_shapes_compile_to_fast_trees() {
        let env = CelEnv::default();
        for source in [
            r#"event.properties.path.startsWith("/pricing")"#,
            r#"event.properties.form == "demo""#,
            "lead.score >= 60 && lead.fit >= 20",
            r#"lead.attributes.industry in ["software", "fintech"]"#,
            r#""company" in lead.attributes || lead.email.endsWith("@gmail.com")"#,
            "!(lead.stage == 'sql')",
        ] {
            let c = env.compile(source).unwrap();
            let f = c
                .fast()
                .unwrap_or_else(|| panic!("`{source}` has no fast tree"));
            fn slow(n: &super::Node) -> bool {
                match n {
                    super::Node::And(a, b) | super::Node::Or(a, b) => slow(a) || slow(b),
                    super::Node::Not(a) => slow(a),
                    super::Node::Slow => true,
                    _ => false,
                }
            }
            assert!(!slow(f), "`{source}` is partly slow: {f:?}");
        }
        assert!(env
            .compile("size(lead.attributes) > 2")
            .unwrap()
            .fast()
            .is_none());
    }
}
