//! `serve --config FILE` and secrets in files, on the real binary: a
//! setting comes from its flag, else its variable, else the file, else the
//! default; bad files and unreadable secrets stop `serve` naming where.

use crate::support::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rules() -> PathBuf {
    repo().join("tests/fixtures/daemon-rules")
}

/// The status of a request with `token` (none: no Authorization header).
fn leads_with(c: &Client, d: &Daemon, token: Option<&str>) -> StatusCode {
    let r = c.get(d.url("/v1/leads"));
    let r = match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    r.send().unwrap().status()
}

fn send_with(c: &Client, d: &Daemon, key: &str) -> StatusCode {
    c.post(d.url("/v1/events"))
        .bearer_auth(key)
        .json(&json!({"id": format!("e-{key}"), "lead": "u", "type": "x"}))
        .send()
        .unwrap()
        .status()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[test]
fn settings_come_from_the_flag_then_the_variable_then_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(&dir.path().join("token"), "file-token\n");
    let config = write(
        &dir.path().join("nurture.toml"),
        &format!(
            "# a deployment's settings\napi-token-file = \"{token_file}\"\n\
             write-key = [\"from-file\"]\nauth-failures-per-minute = 0\n"
        ),
    );
    let db = sqlite_url(dir.path());
    let c = client();
    let base = ["--config", config.as_str()];

    // The file alone: its token (read from its file, newline dropped) and keys.
    let d = Daemon::start_opts(&db, &rules(), None, &base, &[]);
    assert_eq!(leads_with(&c, &d, Some("file-token")), StatusCode::OK);
    assert_eq!(leads_with(&c, &d, None), StatusCode::UNAUTHORIZED);
    assert_eq!(send_with(&c, &d, "from-file"), StatusCode::ACCEPTED);
    d.stop();

    // A variable wins over the file (for a secret too); a flag over both.
    let env = [
        ("NURTURE_WRITE_KEYS", "from-env"),
        ("NURTURE_API_TOKEN", "env-token"),
    ];
    let d = Daemon::start_opts(&db, &rules(), None, &base, &env);
    assert_eq!(send_with(&c, &d, "from-env"), StatusCode::ACCEPTED);
    assert_eq!(send_with(&c, &d, "from-file"), StatusCode::UNAUTHORIZED);
    assert_eq!(leads_with(&c, &d, Some("env-token")), StatusCode::OK);
    assert_eq!(
        leads_with(&c, &d, Some("file-token")),
        StatusCode::UNAUTHORIZED
    );
    d.stop();

    let flag_token = write(&dir.path().join("flag-token"), "flag-token");
    let args = [
        base[0],
        base[1],
        "--write-key",
        "from-flag",
        "--api-token-file",
        flag_token.as_str(),
    ];
    let d = Daemon::start_opts(&db, &rules(), None, &args, &env);
    assert_eq!(send_with(&c, &d, "from-flag"), StatusCode::ACCEPTED);
    assert_eq!(send_with(&c, &d, "from-env"), StatusCode::UNAUTHORIZED);
    assert_eq!(leads_with(&c, &d, Some("flag-token")), StatusCode::OK);
    assert_eq!(
        leads_with(&c, &d, Some("env-token")),
        StatusCode::UNAUTHORIZED
    );
    d.stop();

    // NURTURE_CONFIG names the file too.
    let d = Daemon::start_opts(&db, &rules(), None, &[], &[("NURTURE_CONFIG", &config)]);
    assert_eq!(leads_with(&c, &d, Some("file-token")), StatusCode::OK);
    d.stop();
}

/// `nurture serve` with `args`, expected to stop before serving: its exit
/// code and what it printed.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--rules"])
        .arg(rules())
        .args(args)
        .env_remove("NURTURE_API_TOKEN")
        .env_remove("NURTURE_SMTP_URL")
        .env_remove("NURTURE_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("listening"), "it served: {text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_bad_config_file_or_secret_file_is_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let f = |name: &str, text: &str| write(&dir.path().join(name), text);
    let cases = [
        (
            f(
                "unknown.toml",
                "listen = \"127.0.0.1:0\"\n\nlistn = \"x\"\n",
            ),
            "unknown.toml:3: listn: unknown key",
        ),
        (
            f("value.toml", "workers = 2\nstall-after = \"5 parsecs\"\n"),
            "value.toml:2: stall-after: invalid value '5 parsecs'",
        ),
        (
            f("number.toml", "max-connections = \"many\"\n"),
            "number.toml:1: max-connections: invalid value 'many'",
        ),
        (
            f("list.toml", "listen = [\"a\", \"b\"]\n"),
            "list.toml:1: listen: takes one value, not a list",
        ),
        (
            f("switch.toml", "log-json = \"sometimes\"\n"),
            "switch.toml:1: log-json: must be true or false",
        ),
        (
            f("syntax.toml", "workers = = 2\n"),
            "syntax.toml: TOML parse error at line 1",
        ),
    ];
    for (file, expected) in &cases {
        let (code, text) = refused(&["--database-url", &db, "--config", file]);
        assert_eq!(code, 2, "{file}: {text}");
        assert!(
            text.contains(expected),
            "{file}: wanted {expected:?} in {text}"
        );
    }
    let (code, text) = refused(&["--config", "/nonexistent/nurture.toml"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("/nonexistent/nurture.toml: cannot read"),
        "{text}"
    );

    // Secrets in files: unreadable, empty, or given twice at one level.
    let (code, text) = refused(&[
        "--database-url",
        &db,
        "--api-token-file",
        "/nonexistent/token",
    ]);
    assert_eq!(code, 2);
    assert!(
        text.contains("--api-token-file /nonexistent/token: cannot read the secret"),
        "{text}"
    );
    let empty = f("empty", "\n");
    let (_, text) = refused(&["--database-url", &db, "--secret-file", &empty]);
    assert!(
        text.contains("--secret-file") && text.contains("the file is empty"),
        "{text}"
    );
    let token = f("token", "t0ken\n");
    let (_, text) = refused(&[
        "--database-url",
        &db,
        "--api-token",
        "x",
        "--api-token-file",
        &token,
    ]);
    assert!(
        text.contains("--api-token and --api-token-file are both given (as flags)"),
        "{text}"
    );
    // The database URL from a file (its password is never printed).
    let url = f("db-url", "mysql://nurture:hunter2@db.example/x\n");
    let (_, text) = refused(&["--database-url-file", &url]);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("mysql://nurture:***@db.example/x"), "{text}");
}

#[test]
fn migrate_and_doctor_read_the_database_url_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let file = write(&dir.path().join("db-url"), &format!("{url}\n"));
    for command in ["migrate", "doctor"] {
        let out = Command::new(BIN)
            .args([command, "--database-url-file", &file])
            .env_remove("NURTURE_DATABASE_URL")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {text}");
        assert!(text.contains(&url), "{command} used the file's URL: {text}");
    }
    let out = Command::new(BIN)
        .args(["migrate", "--database-url-file", "/nonexistent/db-url"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the secret"));
}
