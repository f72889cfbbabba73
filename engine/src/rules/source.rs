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

#[derive(Clone, Copy, Debug)]
struct Node {
    /// Where the key naming this node starts (mappings only).
    key: Option<Marker>,
    /// Where the value starts.
    value: Marker,
    style: Option<TScalarStyle>,
}

/// Positions of every key and value of one YAML document.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<YamlPath, Node>,
    /// The file's characters, for mapping offsets inside quoted strings.
    chars: Vec<char>,
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
        }
    }

    /// Where the value at `path` starts; failing that, the nearest ancestor.
    pub fn value_pos(&self, path: &YamlPath) -> Pos {
        self.lookup(path).map(|n| pos(&n.value)).unwrap_or(Pos::START)
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
    /// file, following the scalar's quoting and block style.
    pub fn inner_pos(&self, path: &YamlPath, line: usize, col: usize) -> Pos {
        let Some(node) = self.nodes.get(path) else {
            return self.value_pos(path);
        };
        let start = pos(&node.value);
        let line = line.max(1);
        let col = col.max(1);
        match node.style {
            Some(TScalarStyle::Literal) | Some(TScalarStyle::Folded) => {
                // Content starts on the line after the `|` header, indented.
                let first = start.line + 1;
                let indent = self.indent_of_line(first);
                Pos {
                    line: first + line - 1,
                    col: indent + col,
                }
            }
            Some(TScalarStyle::SingleQuoted) | Some(TScalarStyle::DoubleQuoted) if line == 1 => {
                let single = node.style == Some(TScalarStyle::SingleQuoted);
                let mut idx = node.value.index() + 1; // past the opening quote
                let mut c = start.col + 1;
                for _ in 1..col {
                    let step = match (self.chars.get(idx), self.chars.get(idx + 1)) {
                        (Some('\''), Some('\'')) if single => 2,
                        (Some('\\'), Some(_)) if !single => 2,
                        (Some(_), _) => 1,
                        (None, _) => break,
                    };
                    idx += step;
                    c += step;
                }
                Pos {
                    line: start.line,
                    col: c,
                }
            }
            _ if line == 1 => Pos {
                line: start.line,
                col: start.col + col - 1,
            },
            // A plain or quoted scalar folded over lines: the line is exact,
            // the column follows the line's indentation.
            _ => {
                let l = start.line + line - 1;
                Pos {
                    line: l,
                    col: self.indent_of_line(l) + col,
                }
            }
        }
    }

    fn indent_of_line(&self, line: usize) -> usize {
        let mut current = 1;
        let mut it = self.chars.iter();
        while current < line {
            match it.next() {
                Some('\n') => current += 1,
                Some(_) => {}
                None => return 0,
            }
        }
        it.take_while(|c| **c == ' ').count()
    }
}

enum Frame {
    Seq { path: YamlPath, next: usize },
    Map { path: YamlPath, key: Option<(String, Marker)> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<YamlPath, Node>,
    done: bool,
}

impl Builder {
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
            Some(Frame::Map { path, key }) => match key.take() {
                Some((k, m)) => Some((path.key(&k), Some(m))),
                None => None,
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(value, style, ..) => match self.place() {
                Some((path, key)) => {
                    self.nodes.insert(
                        path,
                        Node {
                            key,
                            value: mark,
                            style: Some(style),
                        },
                    );
                }
                None => {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some((value, mark));
                    }
                }
            },
            Event::Alias(_) => {
                if let Some((path, key)) = self.place() {
                    self.nodes.insert(path, Node { key, value: mark, style: None });
                } else if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some((String::new(), mark));
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // A collection used as a mapping key has no useful path; index
                // its contents under an empty key.
                let (path, key) = self.place().unwrap_or((YamlPath::default().key(""), None));
                self.nodes.insert(path.clone(), Node { key, value: mark, style: None });
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq { path, next: 0 }
                } else {
                    Frame::Map { path, key: None }
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
        assert_eq!(m.key_pos(&p(&["scoring", "0", "points"])), Pos { line: 4, col: 5 });
        assert_eq!(m.value_pos(&p(&["scoring", "0", "points"])), Pos { line: 4, col: 13 });
        assert_eq!(m.value_pos(&p(&["scoring", "0"])), Pos { line: 2, col: 5 });
        assert_eq!(m.value_pos(&p(&["stages", "mql"])), Pos { line: 6, col: 8 });
        // Inside a single-quoted string, past the quote.
        assert_eq!(m.inner_pos(&p(&["scoring", "0", "if"]), 1, 3), Pos { line: 3, col: 10 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(m.value_pos(&p(&["scoring", "0", "nope"])), Pos { line: 2, col: 5 });
    }

    #[test]
    fn maps_block_and_escaped_strings() {
        let text = "a: |\n  first\n  second line\nb: 'it''s x'\n";
        let m = SourceMap::build(text);
        assert_eq!(m.inner_pos(&p(&["a"]), 2, 3), Pos { line: 3, col: 5 });
        // `it's x`: col 6 (the `x`) sits one further right because of `''`.
        assert_eq!(m.inner_pos(&p(&["b"]), 1, 6), Pos { line: 4, col: 10 });
    }
}
