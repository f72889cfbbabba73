//! Who may call what, and from where: the API token (every `/v1` route, from
//! servers) and write keys (the ingest routes only, safe to put in a web
//! page), several of them, each revocable; and the browser origins allowed
//! to send events (CORS). Write keys come from `--write-key` /
//! `NURTURE_WRITE_KEYS` and from `--write-keys-file`, which is re-read when
//! it changes and on SIGHUP, so a key is revoked without a restart.

use crate::daemon::changes::Changes;
use axum::http::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// A write key and the name it is known by in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteKey {
    pub key: String,
    pub name: String,
}

/// Who a credential belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The API token: every route.
    Admin,
    /// A write key (its name): the ingest routes only.
    Writer(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("--write-keys-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("--write-key (NURTURE_WRITE_KEYS) {key:?}: {problem}")]
    Flag { key: String, problem: String },
    #[error("--cors-origin (NURTURE_CORS_ORIGINS) {origin:?}: {problem}")]
    Origin { origin: String, problem: String },
}

/// Why a key cannot be used: Segment sends it as the Basic-auth user, which
/// ends at the first `:`, and HTTP headers carry visible ASCII only.
fn key_problem(key: &str, admin: Option<&str>) -> Option<String> {
    if key.contains(':') {
        return Some("a write key cannot contain ':' (Basic auth ends the user there)".into());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("a write key is visible ASCII (letters, digits, punctuation)".into());
    }
    if admin == Some(key) {
        return Some("a write key must not be the API token, which it would expose".into());
    }
    None
}

/// Reads a keys file: one key per line, optionally followed by a name;
/// blank lines and lines starting with `#` are skipped. Returns the usable
/// keys and the problems of the other lines.
pub fn parse_keys_file(
    path: &Path,
    text: &str,
    admin: Option<&str>,
) -> (Vec<WriteKey>, Vec<AccessError>) {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, name) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(k, n)| (k, n.trim()));
        if let Some(problem) = key_problem(key, admin) {
            errors.push(AccessError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                problem,
            });
            continue;
        }
        let name = if name.is_empty() {
            format!("{}:{}", path.display(), i + 1)
        } else {
            name.to_string()
        };
        keys.push(WriteKey {
            key: key.to_string(),
            name,
        });
    }
    (keys, errors)
}

/// The browser origins allowed on the ingest routes.
#[derive(Clone, Debug, Default)]
pub enum Origins {
    /// None: a request with an `Origin` header is refused.
    #[default]
    None,
    /// `*`: any origin.
    Any,
    List(Vec<HeaderValue>),
}

impl Origins {
    /// Parses `--cors-origin` values: `*`, or origins such as
    /// `https://www.example.com` (scheme, host and port; no path).
    pub fn parse(values: &[String]) -> Result<Origins, AccessError> {
        let values: Vec<&str> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Ok(Origins::None);
        }
        if values.contains(&"*") {
            return Ok(Origins::Any);
        }
        let mut list = Vec::new();
        for v in values {
            let bad = |problem: String| AccessError::Origin {
                origin: v.to_string(),
                problem,
            };
            let url = url::Url::parse(v).map_err(|e| bad(format!("not a URL ({e})")))?;
            // What a browser sends: scheme://host[:port], nothing more.
            let origin = url.origin().ascii_serialization();
            if origin != v {
                return Err(bad(format!(
                    "an origin is scheme://host[:port] as a browser sends it: {origin}"
                )));
            }
            list.push(HeaderValue::from_str(v).map_err(|e| bad(e.to_string()))?);
        }
        Ok(Origins::List(list))
    }

    pub fn allows(&self, origin: &HeaderValue) -> bool {
        match self {
            Origins::None => false,
            Origins::Any => true,
            Origins::List(l) => l.contains(origin),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Origins::None)
    }
}

/// The credentials in force.
pub struct Access {
    admin: Option<String>,
    /// From `--write-key` / `NURTURE_WRITE_KEYS`: fixed until a restart.
    fixed: Vec<WriteKey>,
    file: Option<PathBuf>,
    /// From the file, as last read.
    from_file: RwLock<Arc<Vec<WriteKey>>>,
    pub origins: Origins,
}

impl Access {
    /// Checks every key (an unreadable file or a bad line stops the start).
    pub fn new(
        admin: Option<String>,
        keys: &[String],
        file: Option<PathBuf>,
        origins: Origins,
    ) -> Result<Access, Vec<AccessError>> {
        let mut errors = Vec::new();
        let mut fixed = Vec::new();
        for (n, key) in keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            match key_problem(key, admin.as_deref()) {
                Some(problem) => errors.push(AccessError::Flag {
                    // Enough to find it, not enough to leak it.
                    key: format!("#{} ({}…)", n + 1, key.chars().take(4).collect::<String>()),
                    problem,
                }),
                None => fixed.push(WriteKey {
                    key: key.to_string(),
                    name: format!("--write-key #{}", n + 1),
                }),
            }
        }
        let mut from_file = Vec::new();
        if let Some(path) = &file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let (keys, errs) = parse_keys_file(path, &text, admin.as_deref());
                    from_file = keys;
                    errors.extend(errs);
                }
                Err(source) => errors.push(AccessError::Read {
                    path: path.clone(),
                    source,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Access {
            admin,
            fixed,
            file,
            from_file: RwLock::new(Arc::new(from_file)),
            origins,
        })
    }

    /// No credential configured at all: every route is open (the daemon
    /// then only listens on loopback).
    pub fn open() -> Access {
        Access {
            admin: None,
            fixed: Vec::new(),
            file: None,
            from_file: RwLock::new(Arc::new(Vec::new())),
            origins: Origins::None,
        }
    }

    /// Whether the admin routes need the API token.
    pub fn admin_required(&self) -> bool {
        self.admin.is_some()
    }

    /// Whether the ingest routes need a credential: some token or key (or a
    /// keys file, even an empty one) is configured.
    pub fn ingest_required(&self) -> bool {
        self.admin.is_some() || !self.fixed.is_empty() || self.file.is_some()
    }

    fn file_keys(&self) -> Arc<Vec<WriteKey>> {
        match self.from_file.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whose credential `given` is. Every key is compared in constant time.
    pub fn holder(&self, given: &str) -> Option<Holder> {
        let given = given.as_bytes();
        let mut found = None;
        if self
            .admin
            .as_deref()
            .is_some_and(|t| eq(given, t.as_bytes()))
        {
            found = Some(Holder::Admin);
        }
        let file = self.file_keys();
        for k in self.fixed.iter().chain(file.iter()) {
            if eq(given, k.key.as_bytes()) && found.is_none() {
                found = Some(Holder::Writer(k.name.clone()));
            }
        }
        found
    }

    /// Reads the keys file again and puts its keys in force; a bad line is
    /// logged and left out, the others apply (a key removed from the file
    /// is revoked even when another line is wrong). Without a file, or when
    /// the file cannot be read, no key of the file is in force.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        let (keys, errors) = match std::fs::read_to_string(path) {
            Ok(text) => parse_keys_file(path, &text, self.admin.as_deref()),
            Err(source) => (
                Vec::new(),
                vec![AccessError::Read {
                    path: path.clone(),
                    source,
                }],
            ),
        };
        for e in &errors {
            tracing::error!("write keys: {e}; that key is not accepted");
        }
        let before = self.file_keys();
        let revoked: Vec<&str> = before
            .iter()
            .filter(|k| !keys.iter().any(|n| n.key == k.key))
            .map(|k| k.name.as_str())
            .collect();
        let added: Vec<&str> = keys
            .iter()
            .filter(|k| !before.iter().any(|b| b.key == k.key))
            .map(|k| k.name.as_str())
            .collect();
        tracing::info!(
            file = %path.display(),
            keys = keys.len(),
            ?added,
            ?revoked,
            "write keys reloaded"
        );
        let keys = Arc::new(keys);
        match self.from_file.write() {
            Ok(mut g) => *g = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    pub fn describe(&self) -> String {
        let file = self.file_keys();
        let names: Vec<&str> = self
            .fixed
            .iter()
            .chain(file.iter())
            .map(|k| k.name.as_str())
            .collect();
        format!(
            "API token {}; write keys: {}; CORS origins: {}",
            if self.admin.is_some() {
                "set"
            } else {
                "none (open on loopback)"
            },
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
            match &self.origins {
                Origins::None => "none".to_string(),
                Origins::Any => "any".to_string(),
                Origins::List(l) => l
                    .iter()
                    .filter_map(|o| o.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        )
    }
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Re-reads the keys file when its content changes (checked every second)
/// and on SIGHUP. A change is taken once the file holds still for a tenth
/// of a second, so a file being written is not read half-way.
pub async fn watch(access: Arc<Access>, mut stop: watch::Receiver<bool>) {
    let Some(path) = access.file.clone() else {
        return;
    };
    let mut changes = Changes::new(|| std::fs::read(&path).ok());
    while let Some(now) = changes.next(&mut stop).await {
        changes.seen(now);
        access.reload();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_names_its_keys_and_its_bad_lines() {
        let path = Path::new("keys.txt");
        let text =
            "# site keys\n\nwk_a marketing site\nwk_b\n  # indented comment\nbad:key x\nadmin\n";
        let (keys, errors) = parse_keys_file(path, text, Some("admin"));
        assert_eq!(
            keys,
            vec![
                WriteKey {
                    key: "wk_a".into(),
                    name: "marketing site".into()
                },
                WriteKey {
                    key: "wk_b".into(),
                    name: "keys.txt:4".into()
                },
            ]
        );
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("keys.txt:6: "), "{errors:?}");
        assert!(errors[1].starts_with("keys.txt:7: "), "{errors:?}");
    }

    #[test]
    fn keys_say_whose_they_are() {
        let a = Access::new(
            Some("tok".into()),
            &["k1".into(), " ".into(), "k2".into()],
            None,
            Origins::None,
        )
        .unwrap();
        assert_eq!(a.holder("tok"), Some(Holder::Admin));
        assert_eq!(
            a.holder("k2"),
            Some(Holder::Writer("--write-key #2".into()))
        );
        assert_eq!(a.holder("k3"), None);
        assert_eq!(a.holder(""), None);
        assert!(a.ingest_required() && a.admin_required());
        let open = Access::open();
        assert!(!open.ingest_required() && !open.admin_required());
        let e = Access::new(Some("tok".into()), &["tok".into()], None, Origins::None)
            .err()
            .unwrap();
        assert!(
            e[0].to_string().contains("must not be the API token"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn origins_are_as_browsers_send_them() {
        let o = Origins::parse(&[
            "https://shop.example".into(),
            "http://localhost:3000".into(),
        ])
        .unwrap();
        assert!(o.allows(&HeaderValue::from_static("https://shop.example")));
        assert!(o.allows(&HeaderValue::from_static("http://localhost:3000")));
        assert!(!o.allows(&HeaderValue::from_static("https://evil.example")));
        assert!(Origins::parse(&["*".into()])
            .unwrap()
            .allows(&HeaderValue::from_static("null")));
        assert!(Origins::parse(&[]).unwrap().is_none());
        for bad in [
            "https://shop.example/",
            "shop.example",
            "https://shop.example/app",
        ] {
            assert!(Origins::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
