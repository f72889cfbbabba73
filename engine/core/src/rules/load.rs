//! Reading a rules directory: every `*.yaml` below it (recursively, sorted by
//! path; `*.test.yaml` files are rule tests, not rules), each section checked
//! item by item so that one run reports every error.
//!
//! Every error of an item too: serde stops at the first, so an item that
//! fails is mended and read again ([`parse`]): an unknown key is dropped, a
//! missing or bad value gets a stand-in, until it reads. The mended item is
//! compiled with the others, so its other problems (an unknown owner next to
//! a missing `strategy`) are found too; what would only be a problem of a
//! stand-in is not reported.

use super::config::{self, RulesFile};
use super::source::{within, Pos, Seg, SourceMap, YamlPath};
use serde::de::DeserializeOwned;
use serde_yaml::Value as Yaml;
use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a rules file, at a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as named from the command line (`rules/scoring.yaml`).
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One rules file as read.
pub struct SourceFile {
    pub display: String,
    pub path: PathBuf,
    pub map: SourceMap,
}

/// Where an item was written: a file and a YAML path inside it.
#[derive(Clone, Debug)]
pub struct Loc {
    pub file: usize,
    pub path: YamlPath,
}

impl Loc {
    pub fn key(&self, k: &str) -> Loc {
        Loc {
            file: self.file,
            path: self.path.key(k),
        }
    }
    pub fn index(&self, i: usize) -> Loc {
        Loc {
            file: self.file,
            path: self.path.index(i),
        }
    }
}

/// A value with the place it came from.
#[derive(Clone, Debug)]
pub struct Item<T> {
    pub value: T,
    pub loc: Loc,
}

/// Everything read from a directory, merged but not yet compiled.
#[derive(Default)]
pub struct Loaded {
    pub files: Vec<SourceFile>,
    /// `lists:` entries, each with its name; its `loc` is `lists.<name>`.
    pub lists: Vec<Item<(String, config::ListSpec)>>,
    pub scoring: Vec<Item<config::ScoringRule>>,
    pub fit: Vec<Item<config::FitRule>>,
    pub plugins: Vec<Item<config::PluginRule>>,
    pub stages: Vec<(crate::model::Stage, Item<String>)>,
    pub templates: Vec<Item<config::Template>>,
    pub campaigns: Vec<Item<config::Campaign>>,
    pub owners: Vec<Item<config::Owner>>,
    pub route_rules: Vec<Item<config::RouteRule>>,
    pub sla: Option<Item<config::Sla>>,
    pub recycle_score: Option<Item<i64>>,
    pub webhooks: Vec<Item<config::Webhook>>,
    pub email: Option<Item<config::EmailSettings>>,
    /// `settings.numbers` of every file, joined.
    pub numbers: Vec<Item<String>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Every file found, as displayed, in the order read.
    pub order: Vec<String>,
    /// Where a mended item holds a stand-in for a missing or bad value
    /// (file, path): problems found there later are the stand-in's, not
    /// the marketer's, and are not reported.
    pub stand_ins: Vec<(usize, YamlPath)>,
}

impl Loaded {
    pub fn at_value(&self, loc: &Loc) -> Diagnostic {
        self.diag(
            loc,
            self.files[loc.file].map.value_pos(&loc.path),
            String::new(),
        )
    }

    pub fn diag(&self, loc: &Loc, pos: Pos, message: String) -> Diagnostic {
        let f = &self.files[loc.file];
        Diagnostic {
            file: f.display.clone(),
            pos: f.map.within(pos),
            message,
        }
    }

    /// Whether `loc` is at, in or around a stand-in (`stand_ins`).
    fn stands_in(&self, loc: &Loc) -> bool {
        let p = &loc.path.0;
        self.stand_ins
            .iter()
            .any(|(file, s)| *file == loc.file && (p.starts_with(&s.0) || s.0.starts_with(p)))
    }

    /// A diagnostic at the value of `loc`.
    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        if self.stands_in(loc) {
            return;
        }
        let d = self.diag(
            loc,
            self.files[loc.file].map.value_pos(&loc.path),
            message.into(),
        );
        self.diagnostics.push(d);
    }

    /// A diagnostic at a 1-based position inside the string value at `loc`.
    pub fn error_inside(&mut self, loc: &Loc, line: usize, col: usize, message: impl Into<String>) {
        if self.stands_in(loc) {
            return;
        }
        let pos = self.files[loc.file].map.inner_pos(&loc.path, line, col);
        let d = self.diag(loc, pos, message.into());
        self.diagnostics.push(d);
    }

    pub fn describe(&self, loc: &Loc) -> String {
        let f = &self.files[loc.file];
        let p = f.map.value_pos(&loc.path);
        format!("{}:{}:{}", f.display, p.line, p.col)
    }
}

/// Reads every rules file under `dir`. Problems are collected in
/// `diagnostics`; the caller compiles what could be read.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let mut files = Vec::new();
    if !dir.is_dir() {
        loaded.diagnostics.push(Diagnostic {
            file: dir.display().to_string(),
            pos: Pos::START,
            message: "not a directory of rules files".into(),
        });
        return loaded;
    }
    if let Err(e) = list_yaml(dir, &mut files, false) {
        // Unreadable (no file descriptors left, no permission): say so,
        // never "no rules files".
        loaded.diagnostics.push(Diagnostic {
            file: e.0.display().to_string(),
            pos: Pos::START,
            message: format!("cannot read this directory: {}", e.1),
        });
        return loaded;
    }
    files.sort();
    if files.is_empty() {
        loaded.diagnostics.push(Diagnostic {
            file: dir.display().to_string(),
            pos: Pos::START,
            message: "no *.yaml rules files here".into(),
        });
    }
    for path in files {
        loaded.order.push(path.display().to_string());
        load_file(&mut loaded, &path);
    }
    loaded
}

/// Lists `*.yaml` files (or, with `tests`, `*.test.yaml` files) under `dir`.
/// Directories that cannot be read are skipped.
pub fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, tests: bool) {
    let _ = list_yaml(dir, out, tests);
}

/// As [`collect_yaml`], but stops at the first directory that cannot be
/// read, with its path and why.
pub fn list_yaml(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    tests: bool,
) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            list_yaml(&path, out, tests)?;
        } else if name.ends_with(".yaml") && name.ends_with(".test.yaml") == tests {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads a YAML file into a value and its position index, or a diagnostic.
pub fn read_yaml(path: &Path) -> Result<(String, Yaml, SourceMap), Diagnostic> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: display.clone(),
        pos: Pos::START,
        message: format!("cannot read: {e}"),
    })?;
    let (value, map) = parse_yaml(&display, &text)?;
    Ok((display, value, map))
}

/// Parses YAML text into a value and its position index, or a diagnostic
/// placed in `display` (the file's name as shown).
pub fn parse_yaml(display: &str, text: &str) -> Result<(Yaml, SourceMap), Diagnostic> {
    let value: Yaml = if text.trim().is_empty() {
        Yaml::Null
    } else {
        serde_yaml::from_str(text).map_err(|e| {
            let message = strip_location(&e.to_string());
            let mut pos = e
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    col: l.column(),
                })
                .unwrap_or(Pos::START);
            // serde_yaml places a repeated key at its mapping; find the repeat.
            if message.contains("duplicate entry") {
                pos = SourceMap::build(text).duplicate_key_pos().unwrap_or(pos);
            }
            let pos = within(text, pos);
            let hint = early_quote_hint(text, pos, &message);
            Diagnostic {
                file: display.to_string(),
                pos,
                message: format!("YAML syntax: {message}{hint}"),
            }
        })?
    };
    Ok((value, SourceMap::build(text)))
}

/// Reads one rules file given as text, as if it were the only file of a
/// directory (`path` names it in diagnostics and anchors relative paths such
/// as plugins' `wasm:`). For embedding and for the fuzzer.
pub fn load_text(path: &Path, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    loaded.order.push(path.display().to_string());
    let parsed = parse_yaml(&path.display().to_string(), text);
    add_file(&mut loaded, path, parsed);
    loaded
}

/// YAML's `did not find expected key` right after a quote: the quote ended
/// the value early (`if: 'lead.stage == 'mql''`). Says how to write it.
fn early_quote_hint(text: &str, pos: Pos, message: &str) -> &'static str {
    if !message.starts_with("did not find expected") {
        return "";
    }
    let line = text
        .split('\n')
        .nth(pos.line.saturating_sub(1))
        .unwrap_or("");
    let before: Vec<char> = line.chars().take(pos.col.saturating_sub(1)).collect();
    match before.last() {
        Some('\'') => "; the `'` before this ends the quoted value: inside '...' write a quote as `''` (`'lead.stage == ''mql'''`), or quote the value with \"...\"",
        Some('"') => "; the `\"` before this ends the quoted value: inside \"...\" write a quote as `\\\"`, or quote the value with '...'",
        _ => "",
    }
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn load_file(loaded: &mut Loaded, path: &Path) {
    let parsed = read_yaml(path).map(|(_, value, map)| (value, map));
    add_file(loaded, path, parsed);
}

fn add_file(loaded: &mut Loaded, path: &Path, parsed: Result<(Yaml, SourceMap), Diagnostic>) {
    let display = path.display().to_string();
    let (value, map) = match parsed {
        Ok(x) => x,
        Err(d) => {
            loaded.diagnostics.push(d);
            return;
        }
    };
    let file = loaded.files.len();
    loaded.files.push(SourceFile {
        display,
        path: path.to_path_buf(),
        map,
    });
    let root = Loc {
        file,
        path: YamlPath::default(),
    };
    let top = match value {
        Yaml::Null => return,
        Yaml::Mapping(m) => m,
        _ => {
            loaded.error(
                &root,
                "a rules file must be a mapping of sections (scoring, fit, stages, ...)",
            );
            return;
        }
    };
    for (k, v) in top {
        let Some(name) = k.as_str().map(str::to_string) else {
            loaded.error(&root, "section names must be strings");
            continue;
        };
        let loc = root.key(&name);
        match name.as_str() {
            "lists" => lists(loaded, &loc, v),
            "scoring" => list(loaded, &loc, v, |l| &mut l.scoring),
            "fit" => list(loaded, &loc, v, |l| &mut l.fit),
            "plugins" => list(loaded, &loc, v, |l| &mut l.plugins),
            "templates" => list(loaded, &loc, v, |l| &mut l.templates),
            "campaigns" => list(loaded, &loc, v, |l| &mut l.campaigns),
            "webhooks" => list(loaded, &loc, v, |l| &mut l.webhooks),
            "stages" => stages(loaded, &loc, v),
            "routing" => routing(loaded, &loc, v),
            "settings" => settings(loaded, &loc, v),
            other => {
                let hint = super::suggest(other, config::SECTIONS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let pos = loaded.files[file].map.key_pos(&loc.path);
                let d = loaded.diag(
                    &loc,
                    pos,
                    format!(
                        "unknown section `{other}`{hint}; sections are {}",
                        config::SECTIONS.join(", ")
                    ),
                );
                loaded.diagnostics.push(d);
            }
        }
    }
}

/// Deserializes `value` as `T`, reporting every failure at the exact key or
/// value. After each failure the value is mended and read again (see the
/// module doc); `None` only if it cannot be mended (the item is not a
/// mapping, say), after its errors are reported.
fn parse<T: DeserializeOwned>(loaded: &mut Loaded, loc: &Loc, value: Yaml) -> Option<T> {
    let mut value = value;
    // Relative to `loc`: each stand-in and the candidate it holds.
    let mut stand_ins: Vec<StandIn> = Vec::new();
    // Keys an unknown key was taken for (`pionts` → `points`): that one is
    // then missing too, which says nothing new.
    let mut meant: Vec<YamlPath> = Vec::new();
    for _ in 0..MAX_MENDS {
        let failure = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => {
                for s in stand_ins {
                    let mut path = loc.path.clone();
                    path.0.extend(s.path.0);
                    loaded.stand_ins.push((loc.file, path));
                }
                return Some(v);
            }
            Err(e) => e,
        };
        let rel = relative(failure.path());
        let msg = strip_location(&failure.into_inner().to_string());
        // A stand-in that does not fit: the next candidate.
        if let Some(s) = stand_ins.iter_mut().find(|s| rel.0.starts_with(&s.path.0)) {
            let next = s.next(&msg)?;
            if !set_at(&mut value, &s.path.0, next) {
                return None;
            }
            continue;
        }
        let missing = msg
            .strip_prefix("missing field `")
            .map(|rest| rest.split('`').next().unwrap_or(rest));
        if !missing.is_some_and(|field| meant.contains(&rel.key(field))) {
            let mut path = loc.path.clone();
            path.0.extend(rel.0.iter().cloned());
            let f = &loaded.files[loc.file];
            let (pos, message) = explain(&f.map, &path, &msg);
            let d = Diagnostic {
                file: f.display.clone(),
                pos: f.map.within(pos),
                message,
            };
            loaded.diagnostics.push(d);
        }
        // Mend what was reported, so the next read gets further.
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let at = if rel.0.last() == Some(&Seg::Key(field.to_string())) {
                rel.parent()
            } else {
                rel
            };
            let known = backticked(tail);
            if let Some(s) = super::suggest(field, known.iter().map(String::as_str)) {
                meant.push(at.key(s));
            }
            if !remove_at(&mut value, &at.0, field) {
                return None;
            }
        } else if let Some(field) = missing {
            let s = StandIn::new(rel.key(field));
            if !insert_at(&mut value, &rel.0, field, s.value()) {
                return None;
            }
            stand_ins.push(s);
        } else if rel.0.is_empty() {
            // The item itself is the wrong kind of thing: nothing to mend.
            return None;
        } else {
            let s = StandIn::new(rel);
            if !set_at(&mut value, &s.path.0, s.value()) {
                return None;
            }
            stand_ins.push(s);
        }
    }
    None
}

/// At most this many reads of one item (each mends one problem).
const MAX_MENDS: usize = 64;

/// What a stand-in tries, in order, until the type takes one: `?` (any
/// string, an event type), a duration, a number, a list, a mapping, a
/// boolean, nothing (an optional value); and for an enum its first variant.
#[derive(Debug)]
struct StandIn {
    path: YamlPath,
    tried: usize,
    variant: Option<String>,
}

impl StandIn {
    const CANDIDATES: usize = 7;

    fn new(path: YamlPath) -> StandIn {
        StandIn {
            path,
            tried: 0,
            variant: None,
        }
    }

    fn value(&self) -> Yaml {
        if let Some(v) = &self.variant {
            return Yaml::String(v.clone());
        }
        match self.tried {
            0 => Yaml::String("?".into()),
            1 => Yaml::String("1s".into()),
            2 => Yaml::Number(0.into()),
            3 => Yaml::Sequence(Vec::new()),
            4 => Yaml::Mapping(Default::default()),
            5 => Yaml::Bool(false),
            _ => Yaml::Null,
        }
    }

    /// The next candidate after `msg` refused this one, if any is left.
    fn next(&mut self, msg: &str) -> Option<Yaml> {
        if self.variant.is_none() && msg.starts_with("unknown variant `") {
            let first = backticked(msg).into_iter().nth(1)?;
            self.variant = Some(first);
            return Some(self.value());
        }
        self.variant = None;
        self.tried += 1;
        (self.tried < Self::CANDIDATES).then(|| self.value())
    }
}

/// serde_path_to_error's path as ours.
fn relative(p: &serde_path_to_error::Path) -> YamlPath {
    let mut path = YamlPath::default();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
            serde_path_to_error::Segment::Map { key } => path = path.key(key),
            _ => {}
        }
    }
    path
}

/// The value at `path` inside `v`.
fn at_mut<'a>(v: &'a mut Yaml, path: &[Seg]) -> Option<&'a mut Yaml> {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (Seg::Key(k), Yaml::Mapping(m)) => m.get_mut(k.as_str())?,
            (Seg::Index(i), Yaml::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn set_at(v: &mut Yaml, path: &[Seg], new: Yaml) -> bool {
    match at_mut(v, path) {
        Some(slot) => {
            *slot = new;
            true
        }
        None => false,
    }
}

fn remove_at(v: &mut Yaml, path: &[Seg], key: &str) -> bool {
    match at_mut(v, path) {
        Some(Yaml::Mapping(m)) => m.remove(key).is_some(),
        _ => false,
    }
}

fn insert_at(v: &mut Yaml, path: &[Seg], key: &str, new: Yaml) -> bool {
    match at_mut(v, path) {
        Some(Yaml::Mapping(m)) if !m.contains_key(key) => {
            m.insert(Yaml::String(key.to_string()), new);
            true
        }
        _ => false,
    }
}

/// Deserializes the value found at `path` of a file, or says where and why not.
pub fn deserialize_at<T: DeserializeOwned>(
    map: &SourceMap,
    file: &str,
    path: &YamlPath,
    value: Yaml,
) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut path = path.clone();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                serde_path_to_error::Segment::Map { key } => path = path.key(key),
                _ => {}
            }
        }
        let msg = strip_location(&e.into_inner().to_string());
        let (pos, message) = explain(map, &path, &msg);
        Diagnostic {
            file: file.to_string(),
            pos: map.within(pos),
            message,
        }
    })
}

/// Turns serde's message into a marketer's, and finds where it points.
fn explain(map: &SourceMap, path: &YamlPath, msg: &str) -> (Pos, String) {
    let where_ = if path.0.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(tail);
        let hint = super::suggest(field, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        // serde_path_to_error may or may not have stepped into the key.
        let key_path = if path.0.last() == Some(&Seg::Key(field.to_string())) {
            path.clone()
        } else {
            path.key(field)
        };
        let at = key_path.parent();
        let where_ = if at.0.is_empty() {
            String::new()
        } else {
            format!("{at}: ")
        };
        let expected = if known.is_empty() {
            String::new()
        } else {
            format!("; expected one of {}", known.join(", "))
        };
        return (
            map.key_pos(&key_path),
            format!("{where_}unknown key `{field}`{hint}{expected}"),
        );
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (variant, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(tail);
        let hint = super::suggest(variant, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return (
            map.value_pos(path),
            format!(
                "{where_}unknown value `{variant}`{hint}; expected one of {}",
                known.join(", ")
            ),
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (
            map.value_pos(path),
            format!("{where_}missing key `{field}`"),
        );
    }
    if let Some(plain) = plain_type_error(path, msg) {
        return (map.value_pos(path), format!("{where_}{plain}"));
    }
    (map.value_pos(path), format!("{where_}{msg}"))
}

/// The keys whose text is a duration.
const DURATION_KEYS: [&str; 6] = [
    "after",
    "at",
    "per",
    "accept_within",
    "claim_within",
    "timeout",
];

/// serde's `invalid type: string "25", expected i64` (or `invalid value:
/// integer `-1`, expected u32`) in a marketer's words: what to write, with
/// an example, and what was found.
fn plain_type_error(path: &YamlPath, msg: &str) -> Option<String> {
    let rest = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let key = match path.0.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    let want = match expected {
        "i64" | "i32" => "a whole number, e.g. 25".to_string(),
        "u64" | "u32" | "u16" | "u8" | "usize" => "a whole number, 0 or more, e.g. 3".to_string(),
        "f64" | "f32" => "a number, e.g. 2.5".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a sequence" => "a list: `[a, b]`, or items each starting with `- `".to_string(),
        "a string" if DURATION_KEYS.contains(&key) => {
            "a duration: an integer and a unit (s, m, h, d, w or ms), e.g. \"3d\"".to_string()
        }
        "a string" => "text".to_string(),
        other => match other.strip_prefix("struct ") {
            Some(name) => struct_shape(name)?,
            None if other.starts_with("a map") || other == "map" => "keys and values".to_string(),
            None => return None,
        },
    };
    let found = if let Some(text) = found.strip_prefix("string ") {
        let unquoted = text.trim_matches('"');
        let number = unquoted.parse::<f64>().is_ok() && want.contains("number");
        let tip = if number {
            " (write it without quotes)"
        } else {
            ""
        };
        format!("the text {text}{tip}")
    } else if let Some(n) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", n.trim_matches('`'))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        b.trim_matches('`').to_string()
    } else {
        match found {
            "sequence" => "a list".to_string(),
            "map" => "keys and values".to_string(),
            "unit value" => "nothing".to_string(),
            other => other.to_string(),
        }
    };
    Some(format!("expected {want}, found {found}"))
}

/// The keys of a rules struct serde names in `expected struct X`.
fn struct_shape(name: &str) -> Option<String> {
    Some(
        match name {
            "Limit" => "a limit: `times` (how many) and optional `per` (a duration), e.g. `{ times: 3, per: 7d }`",
            "FrequencyCap" => "a cap: `max` and `per`, e.g. `{ max: 2, per: 7d }`",
            "Sla" => "keys `accept_within`, and optional `notify`, `on_breach`, `max_reassign` and `fallback`",
            "Step" => "a step: `after` (or `at`), `template` and optional `if`",
            "EmailSettings" => "keys `from`, and optional `require_consent` and `frequency_cap`",
            _ => return None,
        }
        .to_string(),
    )
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn list<T: DeserializeOwned>(
    loaded: &mut Loaded,
    loc: &Loc,
    value: Yaml,
    field: impl Fn(&mut Loaded) -> &mut Vec<Item<T>>,
) {
    let items = match value {
        Yaml::Null => return,
        Yaml::Sequence(s) => s,
        _ => {
            loaded.error(
                loc,
                format!("{}: must be a list (items start with `- `)", loc.path),
            );
            return;
        }
    };
    for (i, v) in items.into_iter().enumerate() {
        let item_loc = loc.index(i);
        if let Some(value) = parse::<T>(loaded, &item_loc, v) {
            field(loaded).push(Item {
                value,
                loc: item_loc,
            });
        }
    }
}

fn stages(loaded: &mut Loaded, loc: &Loc, value: Yaml) {
    let Some(st) = parse::<config::Stages>(loaded, loc, value) else {
        return;
    };
    use crate::model::Stage;
    for (stage, cond) in [
        (Stage::Lead, st.lead),
        (Stage::Mql, st.mql),
        (Stage::Sql, st.sql),
        (Stage::Opportunity, st.opportunity),
        (Stage::Customer, st.customer),
    ] {
        let Some(cond) = cond else { continue };
        let item = Item {
            value: cond,
            loc: loc.key(stage.as_str()),
        };
        if let Some((_, first)) = loaded.stages.iter().find(|(s, _)| *s == stage) {
            let msg = format!(
                "stage `{stage}` is already defined at {}",
                loaded.describe(&first.loc)
            );
            loaded.error(&item.loc, msg);
            continue;
        }
        loaded.stages.push((stage, item));
    }
}

fn routing(loaded: &mut Loaded, loc: &Loc, value: Yaml) {
    let m = match value {
        Yaml::Null => return,
        Yaml::Mapping(m) => m,
        _ => {
            loaded.error(
                loc,
                "routing: must be a mapping with owners, rules, sla, recycle_score",
            );
            return;
        }
    };
    for (k, v) in m {
        let name = k.as_str().unwrap_or_default().to_string();
        let kloc = loc.key(&name);
        match name.as_str() {
            "owners" => list(loaded, &kloc, v, |l| &mut l.owners),
            "rules" => list(loaded, &kloc, v, |l| &mut l.route_rules),
            "sla" => {
                if let Some(sla) = parse::<config::Sla>(loaded, &kloc, v) {
                    once(
                        loaded,
                        Item {
                            value: sla,
                            loc: kloc,
                        },
                        |l| &mut l.sla,
                        "routing.sla",
                    );
                }
            }
            "recycle_score" => {
                if let Some(n) = parse::<i64>(loaded, &kloc, v) {
                    once(
                        loaded,
                        Item {
                            value: n,
                            loc: kloc,
                        },
                        |l| &mut l.recycle_score,
                        "routing.recycle_score",
                    );
                }
            }
            other => {
                const KEYS: [&str; 4] = ["owners", "rules", "sla", "recycle_score"];
                let hint = super::suggest(other, KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let pos = loaded.files[loc.file].map.key_pos(&kloc.path);
                let d = loaded.diag(
                    &kloc,
                    pos,
                    format!(
                        "routing: unknown key `{other}`{hint}; expected one of {}",
                        KEYS.join(", ")
                    ),
                );
                loaded.diagnostics.push(d);
            }
        }
    }
}

/// `lists:`, a mapping of names to lists; names are checked in compile.
fn lists(loaded: &mut Loaded, loc: &Loc, value: Yaml) {
    let m = match value {
        Yaml::Null => return,
        Yaml::Mapping(m) => m,
        _ => {
            loaded.error(
                loc,
                "lists: must be a mapping of names to lists, e.g. `lists: { target_countries: [DE, AT, CH] }`",
            );
            return;
        }
    };
    for (k, v) in m {
        let Some(name) = k.as_str().map(str::to_string) else {
            loaded.error(loc, "lists: list names must be text");
            continue;
        };
        let kloc = loc.key(&name);
        // A list that cannot be read is reported here, and still known by
        // name: conditions reading it are not reported again.
        let spec =
            parse::<config::ListSpec>(loaded, &kloc, v).unwrap_or(config::ListSpec(Vec::new()));
        loaded.lists.push(Item {
            value: (name, spec),
            loc: kloc,
        });
    }
}

fn settings(loaded: &mut Loaded, loc: &Loc, value: Yaml) {
    let Some(s) = parse::<config::Settings>(loaded, loc, value) else {
        return;
    };
    for (i, key) in s.numbers.into_iter().enumerate() {
        loaded.numbers.push(Item {
            value: key,
            loc: loc.key("numbers").index(i),
        });
    }
    if let Some(email) = s.email {
        once(
            loaded,
            Item {
                value: email,
                loc: loc.key("email"),
            },
            |l| &mut l.email,
            "settings.email",
        );
    }
}

/// Sets a section that may be written once across all files.
fn once<T>(
    loaded: &mut Loaded,
    item: Item<T>,
    field: impl Fn(&mut Loaded) -> &mut Option<Item<T>>,
    what: &str,
) {
    if let Some(first) = field(loaded).as_ref().map(|f| f.loc.clone()) {
        let msg = format!("{what} is already set at {}", loaded.describe(&first));
        loaded.error(&item.loc, msg);
        return;
    }
    *field(loaded) = Some(item);
}

/// Keeps `RulesFile` the single description of a file's shape: the schema is
/// derived from it, and the loader handles exactly its sections.
const _: fn() = || {
    let RulesFile {
        lists: _,
        scoring: _,
        fit: _,
        plugins: _,
        stages: _,
        templates: _,
        campaigns: _,
        routing: _,
        webhooks: _,
        settings: _,
    } = RulesFile::default();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a flow mapping left open at the end of the file was
    /// reported one line past the last.
    #[test]
    fn syntax_errors_point_inside_the_text() {
        for text in [
            "scoring:\n  - { name: a",
            "scoring:\n  - { name: a\n",
            "a: [\n",
        ] {
            let Err(d) = parse_yaml("r.yaml", text) else {
                panic!("{text:?}: no syntax error");
            };
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                d.pos.line >= 1 && d.pos.line <= lines.len(),
                "{text:?}: {d}"
            );
            let width = lines[d.pos.line - 1].chars().count();
            assert!(d.pos.col >= 1 && d.pos.col <= width + 1, "{text:?}: {d}");
        }
    }

    /// Found by fuzzing: an empty value at the very end of a file was placed
    /// on the line after it.
    #[test]
    fn a_quote_that_ends_a_value_early_says_how_to_write_it() {
        let Err(d) = parse_yaml("r.yaml", "stages:\n  mql: 'lead.stage == 'mql''\n") else {
            panic!("no syntax error");
        };
        assert_eq!((d.pos.line, d.pos.col), (2, 24));
        assert!(d.message.contains("write a quote as `''`"), "{}", d.message);
        let Err(d) = parse_yaml("r.yaml", "stages:\n  mql: \"lead.stage == \"mql\"\"\n") else {
            panic!("no syntax error");
        };
        assert!(
            d.message.contains("quote the value with '...'"),
            "{}",
            d.message
        );
    }

    #[test]
    fn type_errors_say_what_to_write() {
        let text = "scoring:\n  - name: a\n    on: [x]\n    points: \"25\"\n    limit: 3\n  - name: b\n    on: [x]\n    points: 1\n    limit: {times: x}\ncampaigns:\n  - name: d\n    enroll: 'true'\n    steps:\n      - after: 3\n        template: t\n";
        let Err(diags) = crate::rules::Ruleset::from_text(Path::new("r.yaml"), text) else {
            panic!("no errors");
        };
        let got: Vec<String> = diags.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got[..4],
            [
                "r.yaml:4:13: scoring[0].points: expected a whole number, e.g. 25, found the text \"25\" (write it without quotes)",
                "r.yaml:5:12: scoring[0].limit: expected a limit: `times` (how many) and optional `per` (a duration), e.g. `{ times: 3, per: 7d }`, found the number 3",
                "r.yaml:9:20: scoring[1].limit.times: expected a whole number, 0 or more, e.g. 3, found the text \"x\"",
                "r.yaml:14:16: campaigns[0].steps[0].after: expected a duration: an integer and a unit (s, m, h, d, w or ms), e.g. \"3d\", found the number 3",
            ]
        );
    }

    #[test]
    fn shape_errors_point_inside_the_text() {
        let text = "scoring:\n  - name:";
        let Err(diags) = crate::rules::Ruleset::from_text(Path::new("r.yaml"), text) else {
            panic!("no errors");
        };
        for d in &diags.0 {
            assert_eq!(d.pos.line, 2, "{d}");
            assert!(d.pos.col <= "  - name:".len() + 1, "{d}");
        }
    }
}
