//! `serve`'s settings from a TOML file (`--config FILE`, `NURTURE_CONFIG`)
//! and its secrets from files (`--api-token-file`, ...). The file's keys
//! are the serve flags' long names (`database-url`, `write-key`, ...), so
//! each value goes through the same parser as the flag. A setting comes
//! from, in order: a flag, the environment, the file, the default.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Unreadable {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}:{line}: {key}: {message}")]
    Key {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{flag} {file}: cannot read the secret: {source}")]
    Secret {
        flag: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {file}: the file is empty")]
    EmptySecret { flag: String, file: PathBuf },
    #[error("{value} and {flag} are both given ({how}): give one")]
    Both {
        value: String,
        flag: String,
        how: &'static str,
    },
}

/// Flags that are no settings of a file.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// The arguments the file adds to the command line: `--KEY=VALUE` for each
/// of its keys that neither a flag nor a variable set (`serve` is the
/// `serve` subcommand, `given` its matches). Also the ids of those settings.
pub fn file_args(
    serve: &Command,
    given: &ArgMatches,
    file: &Path,
) -> Result<(Vec<OsString>, BTreeSet<String>), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Unreadable {
        file: file.to_path_buf(),
        source,
    })?;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| ConfigError::Syntax {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        })
    };
    let mut args = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, item) in doc.as_table().iter() {
        let span = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span());
        let line = line_of(span);
        let fail = |message: String| ConfigError::Key {
            file: file.to_path_buf(),
            line,
            key: key.to_string(),
            message,
        };
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key) && !NOT_IN_FILE.contains(&key));
        let Some(arg) = arg else {
            let known: Vec<&str> = serve
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !NOT_IN_FILE.contains(l))
                .collect();
            return Err(fail(format!(
                "unknown key (the keys are serve's flags: {})",
                known.join(", ")
            )));
        };
        let id = arg.get_id().as_str().to_string();
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let many = matches!(arg.get_action(), ArgAction::Append);
        let Some(value) = item.as_value() else {
            return Err(fail("must be a value, not a table".into()));
        };
        let scalar = |v: &toml_edit::Value| -> Result<String, ConfigError> {
            match v {
                toml_edit::Value::String(s) => Ok(s.value().clone()),
                toml_edit::Value::Integer(i) => Ok(i.value().to_string()),
                toml_edit::Value::Float(f) => Ok(f.value().to_string()),
                toml_edit::Value::Boolean(b) => Ok(b.value().to_string()),
                _ => Err(fail("must be a string, a number or a boolean".into())),
            }
        };
        let mut mine: Vec<String> = Vec::new();
        if is_switch {
            match value.as_bool() {
                Some(true) => mine.push(format!("--{key}")),
                Some(false) => {}
                None => return Err(fail("must be true or false".into())),
            }
        } else if let Some(list) = value.as_array() {
            if !many {
                return Err(fail("takes one value, not a list".into()));
            }
            for v in list.iter() {
                mine.push(format!("--{key}={}", scalar(v)?));
            }
        } else {
            mine.push(format!("--{key}={}", scalar(value)?));
        }
        // The flag's own parser says whether the value is good.
        let probe = std::iter::once("serve".to_string()).chain(mine.iter().cloned());
        if let Err(e) = serve.clone().try_get_matches_from(probe) {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("").trim();
            return Err(fail(first.trim_start_matches("error: ").to_string()));
        }
        let set_above = matches!(
            given.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !set_above {
            args.extend(mine.into_iter().map(OsString::from));
            from_file.insert(id);
        }
    }
    Ok((args, from_file))
}

/// Where a setting came from, highest last.
fn level(m: &ArgMatches, id: &str, from_file: &BTreeSet<String>) -> u8 {
    if from_file.contains(id) {
        return 1;
    }
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => 3,
        Some(ValueSource::EnvVariable) => 2,
        _ => 0,
    }
}

/// A secret given as a value (`value_id`, e.g. `api_token`) or as a file
/// (`file_id`, `api_token_file`): the file's content, a trailing newline
/// trimmed, when the file comes from a higher level than the value (flag >
/// environment > config file); both at one level is an error.
pub fn secret(
    m: &ArgMatches,
    from_file: &BTreeSet<String>,
    (value_id, file_id): (&str, &str),
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    let Some(file) = file else {
        return Ok(value);
    };
    let flag = format!("--{}", file_id.replace('_', "-"));
    let (lv, lf) = (level(m, value_id, from_file), level(m, file_id, from_file));
    if lv == lf && value.is_some() {
        return Err(ConfigError::Both {
            value: format!("--{}", value_id.replace('_', "-")),
            flag,
            how: match lf {
                3 => "as flags",
                2 => "as environment variables",
                _ => "in the config file",
            },
        });
    }
    if lv > lf {
        return Ok(value);
    }
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Secret {
        flag: flag.clone(),
        file: file.to_path_buf(),
        source,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ConfigError::EmptySecret {
            flag,
            file: file.to_path_buf(),
        });
    }
    Ok(Some(text.to_string()))
}
