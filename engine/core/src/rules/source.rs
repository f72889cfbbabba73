//! Where things are in a rules file: a map from YAML paths (`scoring[2].if`)
//! to line and column, and the mapping of a position inside a string value
//! (a CEL expression, a template) back to the file.
//!
//! serde_yaml reads the values; it keeps no positions once a value is parsed,
//! so this index is built alongside from yaml-rust2's marked events.

use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into a YAML document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn key(&self, k: &str) -> YamlPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }
    pub fn index(&self, i: usize) -> YamlPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    pub fn parent(&self) -> YamlPath {
        let mut p = self.clone();
        p.0.pop();
        p
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };
}

#[derive(Clone, Debug)]
struct Node {
    /// Where the key naming this node starts (mappings only).
    key: Option<Marker>,
    /// Where the value starts.
    value: Marker,
    style: Option<TScalarStyle>,
    /// A scalar's value, to map places inside it back to the file.
    text: Option<String>,
}

/// Positions of every key and value of one YAML document.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<YamlPath, Node>,
    /// The file's characters, for mapping offsets inside quoted strings.
    chars: Vec<char>,
    /// The first key repeated in its mapping.
    duplicate: Option<Marker>,
}

/// `pos`, moved inside `text` if it lies past a line's or the text's end:
/// parsers place some problems at the end of input, one line past the last;
/// point at the end of the last line instead, a place an editor can show.
pub fn within(text: &str, pos: Pos) -> Pos {
    let lines: Vec<&str> = text.split('\n').collect();
    let line = pos.line.clamp(1, lines.len());
    let width = lines[line - 1].trim_end_matches('\r').chars().count();
    let col = if line < pos.line {
        width + 1
    } else {
        pos.col.clamp(1, width + 1)
    };
    Pos { line, col }
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

impl SourceMap {
    /// Indexes `text`. A syntax error leaves the index empty; serde_yaml
    /// reports the error itself.
    pub fn build(text: &str) -> SourceMap {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        SourceMap {
            nodes: b.nodes,
            chars: text.chars().collect(),
            duplicate: b.duplicate,
        }
    }

    /// `pos`, moved inside this file's text (see [`within`]).
    pub fn within(&self, pos: Pos) -> Pos {
        within(&self.chars.iter().collect::<String>(), pos)
    }

    /// Where the first key repeated in its mapping is (serde_yaml reports
    /// such a key at the start of the mapping).
    pub fn duplicate_key_pos(&self) -> Option<Pos> {
        self.duplicate.as_ref().map(pos)
    }

    /// Where the value at `path` starts; failing that, the nearest ancestor.
    pub fn value_pos(&self, path: &YamlPath) -> Pos {
        self.lookup(path)
            .map(|n| pos(&n.value))
            .unwrap_or(Pos::START)
    }

    /// Where the key of `path` starts (falls back to the value, then ancestors).
    pub fn key_pos(&self, path: &YamlPath) -> Pos {
        self.lookup(path)
            .map(|n| pos(n.key.as_ref().unwrap_or(&n.value)))
            .unwrap_or(Pos::START)
    }

    fn lookup(&self, path: &YamlPath) -> Option<&Node> {
        let mut p = path.clone();
        loop {
            if let Some(n) = self.nodes.get(&p) {
                return Some(n);
            }
            p.0.pop()?;
        }
    }

    /// Maps a 1-based (line, col) inside the string value at `path` to the
    /// file, following the scalar's quoting, escapes, line folding and block
    /// indentation. A place past the value's last non-blank character (where
    /// a parser reports an unexpected end) maps to just after that character.
    pub fn inner_pos(&self, path: &YamlPath, line: usize, col: usize) -> Pos {
        let Some(node) = self.nodes.get(path) else {
            return self.value_pos(path);
        };
        let Some(text) = &node.text else {
            return pos(&node.value);
        };
        let chars: Vec<char> = text.chars().collect();
        let mut start = 0;
        for _ in 1..line.max(1) {
            match chars[start..].iter().position(|c| *c == '\n') {
                Some(n) => start += n + 1,
                None => start = chars.len(),
            }
        }
        let line_end = chars[start..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(chars.len(), |n| start + n);
        let target = (start + col.max(1) - 1).min(line_end);
        let places = self.scalar_places(node, &chars);
        let content_end = text.trim_end().chars().count();
        match places.get(target) {
            Some(&(at, _)) if target < content_end => at,
            _ if content_end == 0 => pos(&node.value),
            _ => places[content_end - 1].1,
        }
    }

    /// Where each character of a scalar's value was written: its first
    /// character in the file and the place just after it. Walks the file from
    /// the scalar's start, matching the value's characters and skipping what
    /// YAML drops (quotes, escapes, folded line breaks, indentation).
    fn scalar_places(&self, node: &Node, value: &[char]) -> Vec<(Pos, Pos)> {
        let style = node.style;
        let mut cur = Cursor {
            chars: &self.chars,
            i: node.value.index(),
            at: pos(&node.value),
            // Block content is indented like its first line, where the mark is.
            indent: matches!(style, Some(TScalarStyle::Literal | TScalarStyle::Folded))
                .then(|| node.value.col()),
        };
        if matches!(
            style,
            Some(TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted)
        ) {
            cur.bump(1);
        }
        let mut out = Vec::with_capacity(value.len());
        for &c in value {
            loop {
                let here = cur.at;
                let Some(s) = cur.peek(0) else {
                    out.push((here, here));
                    break;
                };
                let len = match s {
                    '\\' if style == Some(TScalarStyle::DoubleQuoted) => match cur.peek(1) {
                        // An escaped line break joins the lines: no character.
                        Some('\n' | '\r') => {
                            cur.bump(1);
                            continue;
                        }
                        Some('x') => 4,
                        Some('u') => 6,
                        Some('U') => 10,
                        _ => 2,
                    },
                    '\'' if style == Some(TScalarStyle::SingleQuoted)
                        && cur.peek(1) == Some('\'') =>
                    {
                        2
                    }
                    _ if s == c => 1,
                    // A line break folded into a space.
                    '\n' if c == ' ' && style != Some(TScalarStyle::Literal) => 1,
                    // Indentation and breaks YAML dropped.
                    ' ' | '\t' | '\r' | '\n' => {
                        cur.bump(1);
                        continue;
                    }
                    // Not where it was expected: stay, rather than drift.
                    _ => {
                        out.push((here, here));
                        break;
                    }
                };
                cur.bump(len);
                out.push((here, cur.at));
                break;
            }
        }
        out
    }
}

/// A walk through a file's characters, keeping line and column.
struct Cursor<'a> {
    chars: &'a [char],
    i: usize,
    at: Pos,
    /// In a block scalar, the indentation skipped after each line break.
    indent: Option<usize>,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self, n: usize) {
        for _ in 0..n {
            let Some(c) = self.peek(0) else { return };
            self.i += 1;
            if c == '\n' {
                self.at = Pos {
                    line: self.at.line + 1,
                    col: 1,
                };
                for _ in 0..self.indent.unwrap_or(0) {
                    if self.peek(0) != Some(' ') {
                        break;
                    }
                    self.i += 1;
                    self.at.col += 1;
                }
            } else {
                self.at.col += 1;
            }
        }
    }
}

enum Frame {
    Seq {
        path: YamlPath,
        next: usize,
    },
    Map {
        path: YamlPath,
        key: Option<(String, Marker)>,
        empty: bool,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<YamlPath, Node>,
    done: bool,
    duplicate: Option<Marker>,
    /// Collections open below `MAX_DEPTH`, not indexed.
    skipped: usize,
}

/// serde_yaml's recursion limit.
const MAX_DEPTH: usize = 128;

impl Builder {
    fn insert(&mut self, path: YamlPath, node: Node) {
        if let (Some(key), true) = (node.key, self.nodes.contains_key(&path)) {
            self.duplicate.get_or_insert(key);
        }
        self.nodes.insert(path, node);
    }

    /// The path and key marker of the node that starts now, or `None` when the
    /// node is a mapping key.
    fn place(&mut self) -> Option<(YamlPath, Option<Marker>)> {
        match self.stack.last_mut() {
            None => Some((YamlPath::default(), None)),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some((p, None))
            }
            Some(Frame::Map { path, key, .. }) => key.take().map(|(k, m)| (path.key(&k), Some(m))),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            // Deeper than serde_yaml reads, only the nesting is followed, so
            // that absurd depths cost no more than reading them.
            Event::SequenceStart(..) | Event::MappingStart(..)
                if self.skipped > 0 || self.stack.len() >= MAX_DEPTH =>
            {
                if self.skipped == 0 {
                    self.place();
                }
                self.skipped += 1;
            }
            Event::SequenceEnd | Event::MappingEnd if self.skipped > 0 => self.skipped -= 1,
            _ if self.skipped > 0 => {}
            Event::Scalar(value, style, ..) => match self.place() {
                Some((path, key)) => {
                    self.insert(
                        path,
                        Node {
                            key,
                            value: mark,
                            style: Some(style),
                            text: Some(value),
                        },
                    );
                }
                None => {
                    if let Some(Frame::Map { key, path, empty }) = self.stack.last_mut() {
                        *key = Some((value, mark));
                        // A block mapping's own mark sits after its first key;
                        // where its first key starts reads better.
                        if std::mem::take(empty) {
                            if let Some(n) = self.nodes.get_mut(path) {
                                if mark.index() < n.value.index() {
                                    n.value = mark;
                                }
                            }
                        }
                    }
                }
            },
            Event::Alias(_) => {
                if let Some((path, key)) = self.place() {
                    self.insert(
                        path,
                        Node {
                            key,
                            value: mark,
                            style: None,
                            text: None,
                        },
                    );
                } else if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some((String::new(), mark));
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // A collection used as a mapping key has no useful path; index
                // its contents under an empty key.
                let (path, key) = self.place().unwrap_or((YamlPath::default().key(""), None));
                self.insert(
                    path.clone(),
                    Node {
                        key,
                        value: mark,
                        style: None,
                        text: None,
                    },
                );
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq { path, next: 0 }
                } else {
                    Frame::Map {
                        path,
                        key: None,
                        empty: true,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> YamlPath {
        YamlPath(
            s.iter()
                .map(|x| match x.parse::<usize>() {
                    Ok(n) => Seg::Index(n),
                    Err(_) => Seg::Key(x.to_string()),
                })
                .collect(),
        )
    }

    #[test]
    fn finds_keys_and_values() {
        let text = "scoring:\n  - name: a\n    if: 'x == 1'\n    points: 5\nstages:\n  mql: lead.score > 1\n";
        let m = SourceMap::build(text);
        assert_eq!(
            m.key_pos(&p(&["scoring", "0", "points"])),
            Pos { line: 4, col: 5 }
        );
        assert_eq!(
            m.value_pos(&p(&["scoring", "0", "points"])),
            Pos { line: 4, col: 13 }
        );
        assert_eq!(m.value_pos(&p(&["scoring", "0"])), Pos { line: 2, col: 5 });
        assert_eq!(m.value_pos(&p(&["stages", "mql"])), Pos { line: 6, col: 8 });
        // Inside a single-quoted string, past the quote.
        assert_eq!(
            m.inner_pos(&p(&["scoring", "0", "if"]), 1, 3),
            Pos { line: 3, col: 12 }
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            m.value_pos(&p(&["scoring", "0", "nope"])),
            Pos { line: 2, col: 5 }
        );
    }

    #[test]
    fn maps_block_and_escaped_strings() {
        let text = "a: |\n  first\n  second line\nb: 'it''s x'\n";
        let m = SourceMap::build(text);
        assert_eq!(m.inner_pos(&p(&["a"]), 2, 3), Pos { line: 3, col: 5 });
        // `it's x`: col 6 (the `x`) sits one further right because of `''`.
        assert_eq!(m.inner_pos(&p(&["b"]), 1, 6), Pos { line: 4, col: 11 });
    }

    #[test]
    fn maps_folded_lines_and_escapes() {
        // Each value is one line, `x > 1 && lead.fit >= )`: the `)` is its 22nd character.
        let text = "a: >\n  x > 1 &&\n  lead.fit >= )\nb:\n  x > 1 &&\n  lead.fit >= )\nc: \"x > 1 &&\n  lead.fit >= )\"\n";
        let m = SourceMap::build(text);
        for (key, line) in [("a", 3), ("b", 6), ("c", 8)] {
            assert_eq!(
                m.inner_pos(&p(&[key]), 1, 22),
                Pos { line, col: 15 },
                "{key}"
            );
        }
        // `\u00e9` is one character of the value, six of the file.
        let m = SourceMap::build("d: \"\\u00e9 && ]\"\n");
        assert_eq!(m.inner_pos(&p(&["d"]), 1, 6), Pos { line: 1, col: 15 });
        // Columns count characters, not bytes.
        let m = SourceMap::build("# é\ne: 'é && ]'\n");
        assert_eq!(m.inner_pos(&p(&["e"]), 1, 6), Pos { line: 2, col: 10 });
    }

    #[test]
    fn past_the_end_is_after_the_last_character() {
        let m = SourceMap::build("a: |\n  x >=\n\nb: 'x >= '\n");
        assert_eq!(m.inner_pos(&p(&["a"]), 2, 1), Pos { line: 2, col: 7 });
        assert_eq!(m.inner_pos(&p(&["b"]), 1, 6), Pos { line: 4, col: 9 });
    }
}
