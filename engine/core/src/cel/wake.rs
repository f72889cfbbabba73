//! When a condition that reads `now` can first hold: the analysis that lets
//! a `schedule` tick visit only the leads it can change (eval/wake.rs).
//!
//! A condition is *bounded* when it is a conjunction (`&&`) whose parts
//! either do not read `now` at all or say "`now` is past a point", written
//! with `+`, `-`, `>`, `>=`, `<`, `<=` over `now`, `lead.created_at`,
//! `lead.last_activity_at`, constant `timestamp("…")` and `duration("…")`:
//! `now - lead.last_activity_at > duration("720h")`, `lead.created_at +
//! duration("24h") <= now`, `now > timestamp("2026-12-24T00:00:00Z")`. Such a
//! condition is false before the latest of its points, whatever the lead's
//! other fields. Anything else that reads `now` is *unbounded*: it may hold
//! at any time, and every tick visits the lead. Over-approximate by design.

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};
use cel::{Program, Value};

/// A lead's timestamp a bound is measured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    CreatedAt,
    LastActivityAt,
}

/// "`now` is past `Σ coef·anchor + offset`" (ns since the epoch): before
/// that point the part is false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub terms: Vec<(Anchor, i128)>,
    pub offset_ns: i128,
}

/// How a condition depends on `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A conjunction false before the latest of these points (none: it does
    /// not read `now`).
    Bounded(Vec<Bound>),
    /// It may hold at any time.
    Unbounded,
}

/// The shape of `program`'s condition.
pub fn shape(program: &Program) -> Shape {
    let mut conjuncts = Vec::new();
    flatten_and(program.expression(), &mut conjuncts);
    let mut bounds = Vec::new();
    for c in conjuncts {
        if !reads_now(c) {
            continue;
        }
        match lower_bound(c) {
            Some(b) => bounds.push(b),
            None => return Shape::Unbounded,
        }
    }
    Shape::Bounded(bounds)
}

fn flatten_and<'e>(e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    if let Expr::Call(c) = &e.expr {
        if c.func_name == operators::LOGICAL_AND && c.target.is_none() && c.args.len() == 2 {
            flatten_and(&c.args[0], out);
            flatten_and(&c.args[1], out);
            return;
        }
    }
    out.push(e);
}

/// Whether `e` mentions `now` anywhere (a comprehension binding a variable
/// of that name counts too: the safe side).
fn reads_now(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Ident(name) => name == "now",
        Expr::Select(s) => reads_now(&s.operand),
        Expr::Call(c) => c.target.as_deref().is_some_and(reads_now) || c.args.iter().any(reads_now),
        Expr::Comprehension(c) => {
            c.iter_var == "now"
                || c.iter_var2.as_deref() == Some("now")
                || c.accu_var == "now"
                || [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .into_iter()
                .any(reads_now)
        }
        Expr::List(l) => l.elements.iter().any(reads_now),
        // Maps and structs with `now` inside: unbounded, as if they read it.
        Expr::Map(_) | Expr::Struct(_) => true,
        Expr::Literal(_) | Expr::Unspecified => false,
    }
}

/// `a > b`, `a >= b`, `b < a`, `b <= a` with `a - b` equal to `now - point`.
fn lower_bound(e: &IdedExpr) -> Option<Bound> {
    let Expr::Call(c) = &e.expr else { return None };
    if c.target.is_some() || c.args.len() != 2 {
        return None;
    }
    let (greater, lesser) = match c.func_name.as_str() {
        operators::GREATER | operators::GREATER_EQUALS => (&c.args[0], &c.args[1]),
        operators::LESS | operators::LESS_EQUALS => (&c.args[1], &c.args[0]),
        _ => return None,
    };
    // greater - lesser > 0, as `now·k + Σ coef·anchor + offset`.
    let mut f = Linear::default();
    f.add(greater, 1)?;
    f.add(lesser, -1)?;
    if f.now != 1 {
        return None;
    }
    // now > -(Σ coef·anchor + offset)
    Some(Bound {
        terms: f
            .terms
            .into_iter()
            .filter(|(_, k)| *k != 0)
            .map(|(a, k)| (a, -k))
            .collect(),
        offset_ns: -f.offset_ns,
    })
}

/// A sum of `now`, anchors and constants (ns), each with its coefficient.
#[derive(Default)]
struct Linear {
    now: i128,
    terms: Vec<(Anchor, i128)>,
    offset_ns: i128,
}

impl Linear {
    /// Adds `sign · e`; `None` if `e` is not such a sum.
    fn add(&mut self, e: &IdedExpr, sign: i128) -> Option<()> {
        match &e.expr {
            Expr::Ident(name) if name == "now" => self.now += sign,
            Expr::Select(s) if !s.test => {
                let Expr::Ident(root) = &s.operand.expr else {
                    return None;
                };
                let anchor = match (root.as_str(), s.field.as_str()) {
                    ("lead", "created_at") => Anchor::CreatedAt,
                    ("lead", "last_activity_at") => Anchor::LastActivityAt,
                    _ => return None,
                };
                match self.terms.iter_mut().find(|(a, _)| *a == anchor) {
                    Some((_, k)) => *k += sign,
                    None => self.terms.push((anchor, sign)),
                }
            }
            Expr::Call(c) if c.target.is_none() => match (c.func_name.as_str(), c.args.len()) {
                (operators::ADD, 2) => {
                    self.add(&c.args[0], sign)?;
                    self.add(&c.args[1], sign)?;
                }
                (operators::SUBSTRACT, 2) => {
                    self.add(&c.args[0], sign)?;
                    self.add(&c.args[1], -sign)?;
                }
                ("duration" | "timestamp", 1) => {
                    let Expr::Literal(LiteralValue::String(arg)) = &c.args[0].expr else {
                        return None;
                    };
                    self.offset_ns += sign * constant_ns(&c.func_name, arg.inner())?;
                }
                _ => return None,
            },
            _ => return None,
        }
        Some(())
    }
}

/// A constant `duration("…")` or `timestamp("…")` (since the epoch), in ns,
/// as CEL itself reads it.
fn constant_ns(func: &str, arg: &str) -> Option<i128> {
    match super::check::constant_value(func, arg)? {
        Value::Duration(d) => d.num_nanoseconds().map(i128::from),
        Value::Timestamp(t) => t.timestamp_nanos_opt().map(i128::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(src: &str) -> Shape {
        shape(&Program::compile(src).unwrap())
    }

    const H: i128 = 3_600_000_000_000;

    #[test]
    fn a_decay_is_bounded_by_the_last_activity() {
        let b = Bound {
            terms: vec![(Anchor::LastActivityAt, 1)],
            offset_ns: 720 * H,
        };
        for src in [
            r#"now - lead.last_activity_at > duration("720h") && lead.score > 0"#,
            r#"lead.score > 0 && duration("720h") < now - lead.last_activity_at"#,
            r#"lead.last_activity_at + duration("720h") <= now"#,
            r#"now - duration("720h") >= lead.last_activity_at"#,
        ] {
            assert_eq!(of(src), Shape::Bounded(vec![b.clone()]), "{src}");
        }
    }

    #[test]
    fn constants_and_several_bounds() {
        let s = of(
            r#"now > timestamp("1970-01-01T01:00:00Z") && now - lead.created_at >= duration("1h30m")"#,
        );
        assert_eq!(
            s,
            Shape::Bounded(vec![
                Bound {
                    terms: vec![],
                    offset_ns: H
                },
                Bound {
                    terms: vec![(Anchor::CreatedAt, 1)],
                    offset_ns: 3 * H / 2
                },
            ])
        );
        assert_eq!(of("lead.score > 100"), Shape::Bounded(vec![]));
    }

    #[test]
    fn anything_else_reading_now_is_unbounded() {
        for src in [
            // A deadline: true until a point, not from one.
            r#"now - lead.created_at < duration("24h")"#,
            r#"now < timestamp("2027-01-01T00:00:00Z")"#,
            // Or, equality, functions of now, other timestamps.
            r#"now - lead.last_activity_at > duration("720h") || lead.score > 9"#,
            r#"now.getDayOfWeek() == 1"#,
            r#"now - timestamp(lead.attributes.trial_end) > duration("1h")"#,
            r#"!(now < lead.created_at)"#,
            r#"now - now + now > lead.created_at + lead.created_at - now"#,
        ] {
            assert_eq!(of(src), Shape::Unbounded, "{src}");
        }
    }
}
