//! The crate's layering, checked on its source: imports follow the data
//! downward (api → daemon services → store → core), so no import circle
//! runs through files of different top-level modules, and nothing imports
//! the composition root (`serve.rs`) but the command that starts it.
//!
//! The graph is built from the text of `src/`: every `use crate::…`,
//! `use super::…`, `use self::…` (and `use child::…` of a declared
//! submodule), and every such path written inline, is an arrow to the file
//! that defines the module it names. `mod` declarations are not arrows, nor
//! are comments, string literals or `#[cfg(test)]` modules (tests may reach
//! anywhere). A path into the crate root (`crate::model`, re-exported from
//! `nurture-core`) leads outside the crate's files and is no arrow either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The composition root, and the top-level modules allowed to import it.
const ROOT: &str = "serve.rs";
const ROOT_CALLERS: &[&str] = &["cli"];

/// One source file: its path under `src/` and its module path.
struct File {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn collect(dir: &Path, base: &Path, out: &mut Vec<File>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("src/ entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, base, out);
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = p
            .strip_prefix(base)
            .expect("under src/")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "layering.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("source file is readable");
        out.push(File {
            module: module_of(&rel),
            code: without_tests(&strip(&text)),
            rel,
        });
    }
}

/// `lib.rs` and `main.rs` → [], `a.rs` / `a/mod.rs` → [a], `a/b.rs` → [a, b].
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !(parts.is_empty() && (stem == "lib" || stem == "main")) && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The source with comments and string and char literals blanked out.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&b, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{…}'.
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The code without `#[cfg(test)]` items (the attribute and the item after it).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` before any `{`, or where its braces close.
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, ch) in after.char_indices() {
            match ch {
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The names of the modules a file declares (`mod x;`, `pub mod x;`).
fn declared_mods(code: &str) -> BTreeSet<String> {
    let words: Vec<&str> = code
        .split(|c: char| !is_ident(c) && c != ';' && c != '{')
        .filter(|w| !w.is_empty())
        .collect();
    let mut mods = BTreeSet::new();
    for w in words.windows(2) {
        if w[0] == "mod" {
            let name = w[1].trim_end_matches([';', '{']);
            if !name.is_empty() {
                mods.insert(name.to_string());
            }
        }
    }
    mods
}

/// The paths of a `use` tree (`a::{b, c::{d, e as f}}` → a::b, a::c::d, a::c::e).
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn walk(t: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < t.len() && t[*i].is_whitespace() {
                *i += 1;
            }
            if *i >= t.len() {
                out.push(path);
                return;
            }
            if t[*i] == '{' {
                *i += 1;
                loop {
                    walk(t, i, &path, out);
                    while *i < t.len() && t[*i].is_whitespace() {
                        *i += 1;
                    }
                    match t.get(*i) {
                        Some(',') => {
                            *i += 1;
                            while *i < t.len() && t[*i].is_whitespace() {
                                *i += 1;
                            }
                            if t.get(*i) == Some(&'}') {
                                *i += 1;
                                return;
                            }
                        }
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            let start = *i;
            while *i < t.len() && (is_ident(t[*i]) || t[*i] == '*') {
                *i += 1;
            }
            let word: String = t[start..*i].iter().collect();
            if word.is_empty() {
                out.push(path);
                return;
            }
            if word == "as" {
                // The alias that follows names nothing new.
                while *i < t.len() && t[*i].is_whitespace() {
                    *i += 1;
                }
                while *i < t.len() && is_ident(t[*i]) {
                    *i += 1;
                }
                out.push(path);
                return;
            }
            if word != "self" || path.is_empty() {
                path.push(word);
            }
            while *i < t.len() && t[*i].is_whitespace() {
                *i += 1;
            }
            if t.get(*i) == Some(&':') && t.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            if t.get(*i).is_some_and(|c| is_ident(*c)) {
                continue; // `as`
            }
            out.push(path);
            return;
        }
    }
    let t: Vec<char> = tree.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    walk(&t, &mut i, &[], &mut out);
    out
}

/// Every path the code names: those of its `use` items and those written
/// inline, each as written (`crate::a::B`, `super::x`, `child::y`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':') {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "use" {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ';')
                    .map_or(chars.len(), |p| i + p);
                let tree: String = chars[i..end].iter().collect();
                let tree = tree.trim().trim_start_matches("::");
                out.extend(expand_use(tree));
                i = end;
                continue;
            }
            // An inline path: word::word::…
            let mut path = vec![word];
            while i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
                let s = i + 2;
                let mut e = s;
                while e < chars.len() && is_ident(chars[e]) {
                    e += 1;
                }
                if e == s {
                    break;
                }
                path.push(chars[s..e].iter().collect());
                i = e;
            }
            if path.len() > 1 {
                out.push(path);
            }
            continue;
        }
        i += 1;
    }
    out
}

/// The crate's file graph: file → files it imports from.
fn graph(files: &[File]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<&[String], &str> = files
        .iter()
        .filter(|f| f.rel != "main.rs")
        .map(|f| (f.module.as_slice(), f.rel.as_str()))
        .collect();
    let mut g = BTreeMap::new();
    for f in files {
        let children = declared_mods(&f.code);
        let mut to = BTreeSet::new();
        for p in paths(&f.code) {
            let mut abs: Vec<String> = match p[0].as_str() {
                "crate" => Vec::new(),
                "self" => f.module.clone(),
                "super" => f.module[..f.module.len().saturating_sub(1)].to_vec(),
                name if children.contains(name) => f.module.clone(),
                _ => continue,
            };
            let mut rest = &p[if p[0] == "crate" || p[0] == "self" || p[0] == "super" {
                1
            } else {
                0
            }..];
            while rest.first().is_some_and(|s| s == "super") {
                abs.pop();
                rest = &rest[1..];
            }
            abs.extend(rest.iter().cloned());
            // The deepest module named: the file that defines it.
            let target = (1..=abs.len())
                .rev()
                .find_map(|n| by_module.get(&abs[..n]).copied());
            if let Some(t) = target {
                if t != f.rel {
                    to.insert(t.to_string());
                }
            }
        }
        g.insert(f.rel.clone(), to);
    }
    g
}

/// The graph's strongly connected components of more than one file (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The top-level module a file belongs to: `api/x.rs` → `api`, `serve.rs` → `serve`.
fn top(rel: &str) -> &str {
    rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs")
}

fn crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(&src_dir())
}

fn graph_of(base: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(base, base, &mut files);
    graph(&files)
}

#[test]
fn no_import_circle_between_top_level_modules() {
    assert_no_circles(crate_graph());
}

/// The core crate (`engine/core`) is held to the same rule: its modules
/// form layers (docs/architecture.md).
#[test]
fn no_import_circle_between_the_cores_modules() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let g = graph_of(&core);
    assert!(
        g.contains_key("eval/mod.rs"),
        "the core's sources are where expected"
    );
    assert_no_circles(g);
}

fn assert_no_circles(g: BTreeMap<String, BTreeSet<String>>) {
    let bad: Vec<String> = circles(&g)
        .into_iter()
        .filter(|c| c.iter().map(|f| top(f)).collect::<BTreeSet<_>>().len() > 1)
        .map(|c| {
            let arrows: Vec<String> = c
                .iter()
                .flat_map(|f| {
                    g[f].iter()
                        .filter(|t| c.contains(t))
                        .map(move |t| format!("  {f} → {t}"))
                })
                .collect();
            format!("{}:\n{}", c.join(", "), arrows.join("\n"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "import circles through files of different modules:\n{}",
        bad.join("\n")
    );
}

#[test]
fn nothing_imports_the_composition_root() {
    let g = crate_graph();
    assert!(
        g.contains_key(ROOT),
        "the composition root {ROOT} is missing: serve/run live elsewhere"
    );
    let importers: Vec<&String> = g
        .iter()
        .filter(|(f, to)| to.contains(ROOT) && !ROOT_CALLERS.contains(&top(f)))
        .map(|(f, _)| f)
        .collect();
    assert!(
        importers.is_empty(),
        "{ROOT} is imported by {importers:?}: only {ROOT_CALLERS:?} may call it"
    );
}

#[test]
fn the_parser_finds_use_trees_and_inline_paths() {
    let code = strip(
        "use crate::{a::B, c::{d, e as f}};\nuse super::x; // crate::not\nfn f() { crate::g::h(); let s = \"crate::no\"; }",
    );
    let p = paths(&code);
    let has = |want: &[&str]| {
        p.iter()
            .any(|q| q.iter().map(String::as_str).eq(want.iter().copied()))
    };
    assert!(has(&["crate", "a", "B"]), "{p:?}");
    assert!(has(&["crate", "c", "d"]), "{p:?}");
    assert!(has(&["crate", "c", "e"]), "{p:?}");
    assert!(has(&["super", "x"]), "{p:?}");
    assert!(has(&["crate", "g", "h"]), "{p:?}");
    assert!(!p
        .iter()
        .any(|q| q.contains(&"not".to_string()) || q.contains(&"no".to_string())));
    let files = vec![
        File {
            rel: "a/mod.rs".into(),
            module: module_of("a/mod.rs"),
            code: "use crate::b::X;".into(),
        },
        File {
            rel: "b.rs".into(),
            module: module_of("b.rs"),
            code: "fn f() { crate::a::y(); }".into(),
        },
    ];
    assert_eq!(
        circles(&graph(&files)),
        vec![vec!["a/mod.rs".to_string(), "b.rs".to_string()]]
    );
}
