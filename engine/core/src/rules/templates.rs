//! What `nurture check` finds in a template that parses but would fail or
//! print nothing when sent: unknown filters and tests (a render error, so
//! `email_not_composed`), unknown variables and `lead` fields (lenient
//! MiniJinja prints them as empty).

use std::collections::BTreeSet;

/// What a template is given (see `mail::compose`).
pub const VARIABLES: [&str; 4] = ["lead", "unsubscribe_url", "campaign", "step"];

/// The fields of `lead` in a template (see `mail::compose::lead_view`).
pub const LEAD_FIELDS: [&str; 10] = [
    "id",
    "email",
    "attributes",
    "score",
    "fit",
    "stage",
    "owner",
    "consent",
    "created_at",
    "last_activity_at",
];

/// A problem at a byte offset of the template's source.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
}

/// Every problem of a template that MiniJinja compiled.
pub fn check(
    env: &minijinja::Environment,
    template: &minijinja::Template,
    source: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for (offset, kind, name) in filters_and_tests(source) {
        let probe = match kind {
            Kind::Filter => format!("{{{{ none|{name} }}}}"),
            Kind::Test => format!("{{{{ none is {name} }}}}"),
        };
        let unknown = match env.render_str(&probe, ()) {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
            ),
        };
        if unknown {
            let what = match kind {
                Kind::Filter => "filter",
                Kind::Test => "test",
            };
            out.push(Problem {
                offset,
                message: format!("unknown {what} `{name}`"),
            });
        }
    }
    let globals = [
        "range",
        "dict",
        "namespace",
        "debug",
        "loop",
        "self",
        "super",
        "varargs",
        "kwargs",
        "caller",
        "none",
        "true",
        "false",
    ];
    let names: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
    for name in &names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if globals.contains(&root) {
            continue;
        }
        if !VARIABLES.contains(&root) {
            // The nested form repeats the root once per path: report the root alone.
            if name.contains('.') && names.contains(root) {
                continue;
            }
            let hint = crate::suggest::suggest(root, VARIABLES.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            out.push(Problem {
                offset: find_word(source, root),
                message: format!(
                    "unknown variable `{root}`{hint}; templates are given {}",
                    VARIABLES.map(|v| format!("`{v}`")).join(", ")
                ),
            });
            continue;
        }
        if root != "lead" {
            continue;
        }
        let Some(field) = parts.next() else { continue };
        if LEAD_FIELDS.contains(&field) {
            continue;
        }
        let hint = crate::suggest::suggest(field, LEAD_FIELDS.iter().copied())
            .map(|s| format!(" (did you mean `lead.{s}`?)"))
            .unwrap_or_default();
        out.push(Problem {
            offset: source
                .find(&format!("lead.{field}"))
                .map(|i| i + 5)
                .unwrap_or_else(|| find_word(source, field)),
            message: format!(
                "`lead` has no field `{field}`{hint}; its own data is under `lead.attributes`"
            ),
        });
    }
    out.sort_by_key(|p| p.offset);
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Filter,
    Test,
}

/// Filter names (after `|`) and test names (after `is` / `is not`) in the
/// template's expressions and statements, with their byte offsets.
fn filters_and_tests(source: &str) -> Vec<(usize, Kind, &str)> {
    let b = source.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let word_at = |i: usize| {
        let end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
        &source[i..end]
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        // Bytes, not `str` slices: `i` steps through multi-byte characters.
        let open = &b[i..i + 2];
        if open == b"{#" {
            i = find_bytes(b, i, b"#}").map_or(b.len(), |j| j + 2);
            continue;
        }
        if open != b"{{" && open != b"{%" {
            i += 1;
            continue;
        }
        let close: &[u8] = if open == b"{{" { b"}}" } else { b"%}" };
        let raw = open == b"{%" && {
            let mut at = skip_ws(i + 2);
            if b.get(at) == Some(&b'-') {
                at = skip_ws(at + 1);
            }
            word_at(at.min(b.len())) == "raw"
        };
        i += 2;
        while i < b.len() && !b[i..].starts_with(close) {
            match b[i] {
                q @ (b'"' | b'\'') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'|' => {
                    let at = skip_ws(i + 1);
                    let name = word_at(at.min(b.len()));
                    if !name.is_empty() {
                        out.push((at, Kind::Filter, name));
                    }
                    i = at.max(i + 1);
                }
                c if ident(c) && (i == 0 || !ident(b[i - 1]) && b[i - 1] != b'.') => {
                    let w = word_at(i);
                    i += w.len();
                    if w == "is" {
                        let mut at = skip_ws(i);
                        if word_at(at.min(b.len())) == "not" {
                            at = skip_ws(at + 3);
                        }
                        let name = word_at(at.min(b.len()));
                        if !name.is_empty() {
                            out.push((at, Kind::Test, name));
                        }
                    }
                }
                _ => i += 1,
            }
        }
        i += close.len();
        if raw {
            i = find_bytes(b, i.min(b.len()), b"endraw").unwrap_or(b.len());
        }
    }
    out
}

/// Where `pat` first stands in `b` at or after `from`.
fn find_bytes(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|j| from + j)
}

/// The byte offset of `word` as a whole word, or 0.
fn find_word(source: &str, word: &str) -> usize {
    let b = source.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    source
        .match_indices(word)
        .map(|(i, _)| i)
        .find(|&i| {
            (i == 0 || !ident(b[i - 1]) && b[i - 1] != b'.')
                && b.get(i + word.len()).is_none_or(|&c| !ident(c))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<(usize, String)> {
        let env = minijinja::Environment::new();
        let t = env.template_from_str(source).unwrap();
        check(&env, &t, source)
            .into_iter()
            .map(|p| (p.offset, p.message))
            .collect()
    }

    /// Found by fuzzing: the scan stepped into a multi-byte character and
    /// sliced the text there.
    #[test]
    fn multi_byte_text_around_tags_is_scanned_without_panicking() {
        let p = problems(
            "Grüße — {{ lead.email | titlecase }} {# é #} «{% raw %}ü{{ x | nope }}{% endraw %}» ü",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("titlecase"), "{p:?}");
    }

    #[test]
    fn unknown_filters_and_tests() {
        assert_eq!(
            problems("Hi {{ lead.attributes.first_name | titlecase }}"),
            vec![(35, "unknown filter `titlecase`".to_string())]
        );
        assert_eq!(
            problems("{% if step is oddly %}x{% endif %}{{ '|nope' }}{# |nope #}"),
            vec![(14, "unknown test `oddly`".to_string())]
        );
        for ok in [
            "{{ lead.attributes.first_name | default('there') | title }}",
            "{% for x in range(3) %}{{ loop.index }}{% endfor %}",
            "{% if lead.score is not none and step is odd %}{{ campaign|upper }}{% endif %}",
            "{% raw %}{{ x|nothing }}{% endraw %}{{ unsubscribe_url }}",
            "{%- raw %}{{ x|nothing }}{% endraw -%}",
            "{% set name = lead.attributes.first_name %}{{ name }}",
        ] {
            assert_eq!(problems(ok), Vec::new(), "{ok}");
        }
    }

    #[test]
    fn unknown_variables_and_lead_fields() {
        assert_eq!(
            problems("Hi {{ lead.attribute.first_name }}, {{ unsubscribe }}"),
            vec![
                (11, "`lead` has no field `attribute` (did you mean `lead.attributes`?); its own data is under `lead.attributes`".to_string()),
                (39, "unknown variable `unsubscribe` (did you mean `unsubscribe_url`?); templates are given `lead`, `unsubscribe_url`, `campaign`, `step`".to_string()),
            ]
        );
    }
}
