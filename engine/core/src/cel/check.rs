//! What `nurture check` finds in a condition that parses but would fail or
//! read nothing at run time: misspelt `lead` / `event` fields, unknown
//! `lists.<name>`, and constant `duration(...)` / `timestamp(...)`
//! arguments that cannot parse. The same walk finds the fields a condition
//! compares with a number, which the evaluator names when one holds text.
//!
//! Found by walking the parsed expression, so words inside strings and
//! variables bound by comprehensions (`exists(x, ...)`) are never mistaken
//! for reads.

use super::CelError;
use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::Program;

/// The fields a condition can read on `lead` (see `views::LeadView`).
pub const LEAD_FIELDS: [&str; 11] = [
    "id",
    "email",
    "score",
    "fit",
    "stage",
    "owner",
    "consent",
    "attributes",
    "created_at",
    "last_activity_at",
    "recycled_count",
];

/// The fields a condition can read on `event` (see `views::EventView`).
pub const EVENT_FIELDS: [&str; 6] = ["id", "type", "lead", "at", "properties", "traits"];

/// What a constant `duration("…")` or `timestamp("…")` is, as CEL itself
/// reads it; `None` if it cannot be read.
pub(super) fn constant_value(func: &str, arg: &str) -> Option<cel::Value> {
    let quoted = serde_json::Value::String(arg.to_string()).to_string();
    Program::compile(&format!("{func}({quoted})"))
        .ok()?
        .execute(&cel::Context::default())
        .ok()
}

/// What the walk found in one condition.
pub struct Checked {
    pub errors: Vec<CelError>,
    /// Fields compared with a number (`lead.attributes.employees >= 1000`),
    /// each as its path from the variable: `["lead", "attributes", "employees"]`.
    pub numeric: Vec<Vec<String>>,
}

/// Every problem found in `program`, compiled from `source`; `lists` are
/// the names of the rules' lists.
pub fn check(program: &Program, source: &str, lists: &[String]) -> Checked {
    let mut w = Walker {
        program,
        source,
        lists,
        bound: Vec::new(),
        errors: Vec::new(),
        numeric: Vec::new(),
    };
    w.walk(program.expression());
    Checked {
        errors: w.errors,
        numeric: w.numeric,
    }
}

struct Walker<'p> {
    program: &'p Program,
    source: &'p str,
    lists: &'p [String],
    /// Variables bound by the comprehensions around the current node.
    bound: Vec<&'p str>,
    errors: Vec<CelError>,
    numeric: Vec<Vec<String>>,
}

/// Comparisons whose operand of text, against a number, is worth naming.
const COMPARISONS: [&str; 6] = [
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::EQUALS,
    operators::NOT_EQUALS,
];

/// A number written in the condition (`1000`, `2.5`, `-3`).
fn number_literal(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_)) => {
            true
        }
        Expr::Call(c) if c.func_name == operators::NEGATE && c.args.len() == 1 => {
            number_literal(&c.args[0])
        }
        _ => false,
    }
}

impl<'p> Walker<'p> {
    fn walk(&mut self, e: &'p IdedExpr) {
        match &e.expr {
            Expr::Select(s) => {
                self.field(&s.operand, &s.field);
                self.walk(&s.operand);
            }
            Expr::Call(c) => {
                if c.target.is_none()
                    && c.args.len() == 2
                    && COMPARISONS.contains(&c.func_name.as_str())
                {
                    for (field, number) in [(&c.args[0], &c.args[1]), (&c.args[1], &c.args[0])] {
                        if number_literal(number) {
                            if let Some(path) = self.data_path(field) {
                                if !self.numeric.contains(&path) {
                                    self.numeric.push(path);
                                }
                            }
                        }
                    }
                }
                // `lead["scores"]` reads a field just as `lead.scores` does.
                if c.func_name == cel::common::ast::operators::INDEX && c.args.len() == 2 {
                    if let Expr::Literal(LiteralValue::String(f)) = &c.args[1].expr {
                        self.field(&c.args[0], f.inner());
                    }
                }
                if c.target.is_none() && c.args.len() == 1 {
                    if let Expr::Literal(LiteralValue::String(arg)) = &c.args[0].expr {
                        self.constant(&c.func_name, arg.inner(), &c.args[0]);
                    }
                }
                if let Some(t) = &c.target {
                    self.walk(t);
                }
                for a in &c.args {
                    self.walk(a);
                }
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range);
                let depth = self.bound.len();
                self.bound.push(&c.iter_var);
                if let Some(v) = &c.iter_var2 {
                    self.bound.push(v);
                }
                self.bound.push(&c.accu_var);
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part);
                }
                self.bound.truncate(depth);
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.walk(x);
                }
            }
            Expr::Map(m) => self.entries(&m.entries),
            Expr::Struct(s) => self.entries(&s.entries),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries(&mut self, entries: &'p [cel::common::ast::IdedEntryExpr]) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(f) => self.walk(&f.value),
                EntryExpr::MapEntry(m) => {
                    self.walk(&m.key);
                    self.walk(&m.value);
                }
            }
        }
    }

    /// The path of a key read inside `lead.attributes`, `event.properties`
    /// or `event.traits` (`lead.attributes.company.size`, or with `["…"]`).
    fn data_path(&self, e: &IdedExpr) -> Option<Vec<String>> {
        let mut path = Vec::new();
        let mut at = e;
        loop {
            match &at.expr {
                Expr::Select(s) if !s.test => {
                    path.push(s.field.clone());
                    at = &s.operand;
                }
                Expr::Call(c)
                    if c.func_name == operators::INDEX
                        && c.target.is_none()
                        && c.args.len() == 2 =>
                {
                    let Expr::Literal(LiteralValue::String(k)) = &c.args[1].expr else {
                        return None;
                    };
                    path.push(k.inner().to_string());
                    at = &c.args[0];
                }
                Expr::Ident(root) if !self.bound.contains(&root.as_str()) => {
                    path.push(root.clone());
                    break;
                }
                _ => return None,
            }
        }
        path.reverse();
        let open = match path[0].as_str() {
            "lead" => ["attributes"].as_slice(),
            "event" => ["properties", "traits"].as_slice(),
            _ => return None,
        };
        (path.len() >= 3 && open.contains(&path[1].as_str())).then_some(path)
    }

    /// `lists.name`: one of the rules' lists.
    fn list(&mut self, operand: &IdedExpr, name: &str) {
        if self.lists.iter().any(|l| l == name) {
            return;
        }
        let known = if self.lists.is_empty() {
            "no lists are defined: add them in a top-level `lists:` section".to_string()
        } else {
            let names: Vec<String> = self.lists.iter().map(|l| format!("`{l}`")).collect();
            format!("the lists are {}", names.join(", "))
        };
        let hint = crate::suggest::suggest(name, self.lists.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `lists.{s}`?)"))
            .unwrap_or_default();
        let (line, col) = self.line_col(self.after(operand, name));
        self.errors.push(CelError {
            line,
            col,
            message: format!("unknown list `{name}`{hint}; {known}"),
        });
    }

    /// Where `name` is written after `operand` (`lists.` / `lead["`).
    fn after(&self, operand: &IdedExpr, name: &str) -> usize {
        let after = self.end_of(operand);
        // `get`: the parser's offsets need not fall on a character boundary
        // of text with multi-byte characters.
        self.source
            .get(after..)
            .and_then(|rest| rest.find(name))
            .map(|i| after + i)
            .unwrap_or(after)
    }

    /// `operand.field`, checked when the operand is `lead`, `event` or
    /// `lists` itself.
    fn field(&mut self, operand: &IdedExpr, field: &str) {
        let Expr::Ident(root) = &operand.expr else {
            return;
        };
        if self.bound.contains(&root.as_str()) {
            return;
        }
        let (known, open): (&[&str], &str) = match root.as_str() {
            "lead" => (&LEAD_FIELDS, "attributes"),
            "event" => (&EVENT_FIELDS, "properties"),
            "lists" => return self.list(operand, field),
            _ => return,
        };
        if known.contains(&field) {
            return;
        }
        let hint = crate::suggest::suggest(field, known.iter().copied())
            .map(|s| format!(" (did you mean `{root}.{s}`?)"))
            .unwrap_or_default();
        let (line, col) = self.line_col(self.after(operand, field));
        self.errors.push(CelError {
            line,
            col,
            message: format!(
                "`{root}` has no field `{field}`{hint}; its fields are {}, and its own data is under `{root}.{open}`",
                known.join(", ")
            ),
        });
    }

    /// A function of one constant string, evaluated now, so that a value
    /// that cannot parse is found before the rules run.
    fn constant(&mut self, func: &str, arg: &str, at: &IdedExpr) {
        if func != "duration" && func != "timestamp" {
            return;
        }
        if constant_value(func, arg).is_some() {
            return;
        }
        let quoted = serde_json::Value::String(arg.to_string()).to_string();
        let message = if func == "duration" {
            let fix = hours(arg)
                .map(|h| format!("; write \"{h}h\""))
                .unwrap_or_default();
            format!(
                "duration({quoted}) cannot be read: CEL durations count in h, m, s, ms, us and ns (no days or weeks){fix}"
            )
        } else {
            format!(
                "timestamp({quoted}) cannot be read: write a date and time with its offset, e.g. \"2026-01-05T00:00:00Z\""
            )
        };
        let (line, col) = self.line_col(self.start_of(at));
        self.errors.push(CelError { line, col, message });
    }

    fn start_of(&self, e: &IdedExpr) -> usize {
        self.program
            .source_info()
            .offset_for(e.id)
            .map(|(start, _)| start as usize)
            .unwrap_or(0)
    }

    /// The byte after `e` (a plain identifier, whose range ends on its last byte).
    fn end_of(&self, e: &IdedExpr) -> usize {
        self.program
            .source_info()
            .offset_for(e.id)
            .map(|(_, end)| end as usize + 1)
            .unwrap_or(0)
            .min(self.source.len())
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// `"21d"` and `"3w"` in hours, for the fix in the message.
fn hours(arg: &str) -> Option<i64> {
    let unit = match arg.chars().last()? {
        'd' => 24,
        'w' => 24 * 7,
        _ => return None,
    };
    arg[..arg.len() - 1]
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
}

#[cfg(test)]
mod tests {
    use crate::cel::CelEnv;

    fn errors(src: &str) -> Vec<(usize, usize, String)> {
        match CelEnv::default().compile(src) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| (e.line, e.col, e.message)).collect(),
        }
    }

    #[test]
    fn misspelt_fields_are_errors_with_a_suggestion() {
        let e = errors("lead.scores >= 60");
        assert_eq!((e[0].0, e[0].1), (1, 6));
        assert!(e[0].2.contains("did you mean `lead.score`?"), "{}", e[0].2);
        let e = errors("lead.attribute.employees > 10 && event.propertys.x == 1");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].0, e[0].1), (1, 6));
        assert!(e[0].2.contains("`lead.attributes`"), "{}", e[0].2);
        assert_eq!((e[1].0, e[1].1), (1, 40));
        assert!(e[1].2.contains("`event.properties`"), "{}", e[1].2);
        let e = errors("has(lead.ownr) || lead[\"scroe\"] > 1");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[1].0, e[1].1), (1, 25));
    }

    #[test]
    fn multi_byte_text_before_a_misspelt_field_is_placed_without_panicking() {
        let e = errors("lead.attributes.city == 'Zürich — Genève' && lead.scores > 1");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].2.contains("did you mean `lead.score`?"), "{}", e[0].2);
        assert_eq!(e[0].0, 1);
    }

    #[test]
    fn open_fields_strings_and_bound_variables_are_not_checked() {
        for ok in [
            "lead.attributes.anything > 1",
            "event.properties.whatever == 'x' && event.traits.y == 1",
            "lead.recycled_count > 0 && lead.last_activity_at < now",
            "[1].exists(lead, lead.nothing == 1)",
            "'lead.scores' == lead.email",
        ] {
            assert_eq!(errors(ok), Vec::new(), "{ok}");
        }
    }

    #[test]
    fn unknown_lists_are_errors_with_a_suggestion() {
        let lists: std::collections::BTreeMap<String, Vec<serde_json::Value>> = [
            ("target_countries".to_string(), vec!["DE".into()]),
            ("free_mail".to_string(), vec!["gmail.com".into()]),
        ]
        .into();
        let env = CelEnv::with_lists(&lists);
        let e = env
            .compile("lead.attributes.country in lists.target_countrys")
            .unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 34));
        assert_eq!(
            e[0].message,
            "unknown list `target_countrys` (did you mean `lists.target_countries`?); the lists are `free_mail`, `target_countries`"
        );
        for ok in [
            "lead.attributes.country in lists.target_countries",
            "lists.free_mail.exists(d, lead.email.endsWith('@' + d))",
            "lists['free_mail'].size() > 0",
        ] {
            assert!(env.compile(ok).is_ok(), "{ok}");
        }
        // `lists` is a variable like the others: a typo of it is one too.
        let e = env.compile("'DE' in list.target_countries").unwrap_err();
        assert!(
            e[0].message.contains("(did you mean `lists`?)"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn fields_compared_with_a_number_are_found() {
        let numeric = |src: &str| {
            let p = cel::Program::compile(src).unwrap();
            super::check(&p, src, &[]).numeric
        };
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            numeric("lead.attributes.employees >= 1000 && 2.5 < event.properties.x && lead.attributes['a b'].c == -3"),
            [
                path("lead.attributes.employees"),
                path("event.properties.x"),
                vec!["lead".into(), "attributes".into(), "a b".into(), "c".into()],
            ]
        );
        for none in [
            "lead.score >= 10",
            "int(lead.attributes.employees) >= 1000",
            "lead.attributes.plan == 'pro'",
            "lead.attributes.a >= lead.attributes.b",
            "[1].exists(lead, lead.attributes.x > 1)",
        ] {
            assert_eq!(numeric(none), Vec::<Vec<String>>::new(), "{none}");
        }
    }

    #[test]
    fn constant_durations_and_timestamps_must_parse() {
        let e = errors("now - lead.last_activity_at > duration(\"21d\")");
        assert_eq!((e[0].0, e[0].1), (1, 40));
        assert!(e[0].2.contains("write \"504h\""), "{}", e[0].2);
        assert!(errors("lead.created_at > timestamp('2026-01-05')")[0]
            .2
            .contains("2026-01-05T00:00:00Z"));
        assert_eq!(
            errors("now - lead.created_at > duration('1h30m')"),
            Vec::new()
        );
        assert_eq!(
            errors("lead.created_at > timestamp('2026-01-05T00:00:00Z')"),
            Vec::new()
        );
    }
}
