//! Bounds on the values that reach storage: nesting depth, sizes, and text a
//! database column can hold. Whatever is stored (an event, a trait, a plugin's
//! attribute or reason) is checked with these first, so that nothing stored
//! can fail to be read back: serde_json refuses to read more than 128 levels
//! of nesting, and PostgreSQL's `text` refuses the NUL character.

use serde_json::Value;

/// Deepest nesting of a value kept with a lead (a trait, a property, a
/// plugin's attribute): `{"a":{"b":1}}` is 2 deep, a scalar 0. The lead's
/// stored state nests it a few levels further, far below serde_json's 128.
pub const MAX_DEPTH: usize = 32;

/// Longest identifier (event id, lead id, event type, tag, attribute key), in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Longest free text kept in a column of its own (a plugin's reason), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Largest single value kept with a lead, as JSON text, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a value may not be stored. `path` names where in it, JSON-style
/// (`traits.company.name`, `[3]`); empty for the value as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", if path.is_empty() { String::new() } else { format!("`{path}`: ") })]
pub struct BoundsError {
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
    #[error("contains a NUL character (\\u0000), which cannot be stored")]
    Nul,
}

fn fail(path: &str, problem: Problem) -> BoundsError {
    BoundsError {
        path: path.to_string(),
        problem,
    }
}

/// Text for a column of its own: no NUL, at most `max` bytes.
pub fn check_text(path: &str, s: &str, max: usize) -> Result<(), BoundsError> {
    if s.len() > max {
        return Err(fail(path, Problem::TooLong { max }));
    }
    if s.contains('\0') {
        return Err(fail(path, Problem::Nul));
    }
    Ok(())
}

/// A value kept with a lead: at most [`MAX_DEPTH`] deep, at most
/// [`MAX_VALUE_BYTES`] as JSON, no NUL in any key or string. `path` names
/// the value itself and prefixes the place of a problem inside it.
pub fn check_value(path: &str, v: &Value) -> Result<(), BoundsError> {
    walk(path, v, 0)?;
    let size = json_len(v);
    if size > MAX_VALUE_BYTES {
        return Err(fail(
            path,
            Problem::TooLong {
                max: MAX_VALUE_BYTES,
            },
        ));
    }
    Ok(())
}

/// Every value of an object, as [`check_value`] with `path.key` for each.
pub fn check_object(path: &str, m: &serde_json::Map<String, Value>) -> Result<(), BoundsError> {
    for (k, v) in m {
        let here = join(path, k);
        check_text(&here, k, MAX_ID_BYTES)?;
        check_value(&here, v)?;
    }
    Ok(())
}

fn walk(path: &str, v: &Value, depth: usize) -> Result<(), BoundsError> {
    match v {
        Value::String(s) if s.contains('\0') => Err(fail(path, Problem::Nul)),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(fail(path, Problem::TooDeep));
            }
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            if depth >= MAX_DEPTH {
                return Err(fail(path, Problem::TooDeep));
            }
            for (k, item) in m {
                let here = join(path, k);
                if k.contains('\0') {
                    return Err(fail(&here, Problem::Nul));
                }
                walk(&here, item, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The length of `v` as compact JSON, without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; a value that cannot be serialized
    // (none can: keys are strings) would count as empty.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| json!({ "a": v }))
    }

    #[test]
    fn depth_is_bounded_and_named() {
        assert!(check_value("v", &nested(MAX_DEPTH)).is_ok());
        let e = check_value("v", &nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.problem, Problem::TooDeep);
        assert!(e.path.starts_with("v.a"), "{e}");
    }

    #[test]
    fn a_value_within_bounds_reads_back_inside_a_lead() {
        // The promise behind MAX_DEPTH: the deepest value allowed, nested in
        // a stored lead's attributes, still parses.
        let lead = json!({"attributes": {"x": nested(MAX_DEPTH)}, "ledger": []});
        let text = lead.to_string();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }

    #[test]
    fn nul_is_refused_in_strings_and_keys() {
        let e = check_value("traits", &json!({"name": "a\u{0}b"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.problem), ("traits.name", Problem::Nul));
        let e = check_value("traits", &json!({"k\u{0}": 1})).unwrap_err();
        assert_eq!(e.problem, Problem::Nul);
        assert_eq!(
            check_text("lead", "u\u{0}1", MAX_ID_BYTES)
                .unwrap_err()
                .problem,
            Problem::Nul
        );
    }

    #[test]
    fn size_is_bounded() {
        let big = json!("x".repeat(MAX_VALUE_BYTES));
        assert!(matches!(
            check_value("v", &big).unwrap_err().problem,
            Problem::TooLong { .. }
        ));
        assert!(check_text("id", &"x".repeat(MAX_ID_BYTES + 1), MAX_ID_BYTES).is_err());
    }
}
