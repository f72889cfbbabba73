//! Helpers shared by the daemon's end-to-end tests: the real binary on a
//! free port, SQLite files and, when `NURTURE_TEST_DATABASE_URL` (or
//! `DATABASE_URL`) names a PostgreSQL server, a fresh database per test;
//! a real SMTP server (`smtp`); and [`skip`], for a test that cannot run
//! here (it fails instead in CI).

// Not every helper is used by every build of the tests.
#![allow(dead_code)]

pub mod smtp;

pub use reqwest::blocking::Client;
pub use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nurture");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    /// Where its `.eml` files go unless it was given `--smtp-url`.
    pub outbox: tempfile::TempDir,
    /// Its log file, if it was started with one: shown when a test fails.
    log: Option<PathBuf>,
}

impl Daemon {
    pub fn start(db: &str, rules: &Path, token: Option<&str>) -> Daemon {
        Daemon::start_opts(db, rules, token, &[], &[])
    }

    /// With extra environment variables (e.g. webhook secrets).
    pub fn start_with(db: &str, rules: &Path, token: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_opts(db, rules, token, &[], env)
    }

    /// With more `serve` flags (`--smtp-url`, `--secret`, ...).
    pub fn start_args(db: &str, rules: &Path, token: Option<&str>, args: &[&str]) -> Daemon {
        Daemon::start_opts(db, rules, token, args, &[])
    }

    pub fn start_opts(
        db: &str,
        rules: &Path,
        token: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::spawn(db, rules, token, args, env, Stdio::inherit())
    }

    /// With its log (stderr) written to `log`, for tests that read it.
    pub fn start_logged(db: &str, rules: &Path, args: &[&str], log: &Path) -> Daemon {
        Daemon::start_logged_env(db, rules, args, &[], log)
    }

    /// Logged, with environment variables (`NURTURE_LOG=debug`, ...).
    pub fn start_logged_env(
        db: &str,
        rules: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Daemon {
        let file = std::fs::File::create(log).expect("create the daemon's log file");
        let mut d = Daemon::spawn(db, rules, None, args, env, Stdio::from(file));
        d.log = Some(log.to_path_buf());
        d
    }

    fn spawn(
        db: &str,
        rules: &Path,
        token: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Daemon {
        let outbox = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
            .arg("--rules")
            .arg(rules)
            .arg("--outbox")
            .arg(outbox.path())
            .args(args)
            .env_remove("NURTURE_API_TOKEN")
            .env_remove("NURTURE_SMTP_URL")
            .env("NURTURE_LOG", "warn")
            // Timeline and ledger rows go by their own time, and fixtures
            // stand at fixed dates (rules/events.jsonl: January 2026): kept,
            // so no test's outcome depends on the day it runs. Retention
            // tests give their own settings.
            .env("NURTURE_RETAIN_TIMELINE", "never")
            .env("NURTURE_RETAIN_LEDGER", "never")
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(t) = token {
            cmd.args(["--api-token", t]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start nurture serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("nurture listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Daemon {
            child,
            base,
            outbox,
            log: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the daemon said last.
        if let (true, Some(log)) = (std::thread::panicking(), &self.log) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {} ---\n{tail}\n---", log.display());
        }
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nurture.db").display())
}

/// Whether this is CI (`CI=true`, as `.ci/run` sets): there, nothing may
/// be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test (or part of one) that cannot run on this machine: on a laptop it
/// says why and goes on (the caller returns); in CI it fails, so a green CI
/// run never hides a test that did not run.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: cannot run, and CI=true: {why}");
    eprintln!("{test}: skipped: {why}");
}

/// Why a PostgreSQL test cannot run.
pub const NO_POSTGRES: &str = "PostgreSQL not configured (NURTURE_TEST_DATABASE_URL)";

/// A fresh PostgreSQL database for one test, if a server is configured.
pub fn postgres_url(name: &str) -> Option<String> {
    let base = std::env::var("NURTURE_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()?;
    // One database per test, made anew each run. NURTURE_TEST_DB_PREFIX keeps
    // two checkouts testing on one server from dropping each other's.
    let prefix =
        std::env::var("NURTURE_TEST_DB_PREFIX").unwrap_or_else(|_| "nurture_test".to_string());
    let db = format!("{prefix}_{name}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Executor;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&base)
            .await
            .expect("connect to the test PostgreSQL");
        pool.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
            .await
            .unwrap();
        pool.execute(format!("CREATE DATABASE {db}").as_str())
            .await
            .unwrap();
    });
    // Same server and credentials, the new database.
    let (head, _) = base.rsplit_once('/').expect("a URL with a database name");
    Some(format!("{head}/{db}"))
}

/// Each test runs on SQLite, and on PostgreSQL when one is configured.
pub fn backends(name: &str, dir: &Path) -> Vec<String> {
    let mut v = vec![sqlite_url(dir)];
    match postgres_url(name) {
        Some(pg) => v.push(pg),
        None => skip(&format!("{name} on PostgreSQL"), NO_POSTGRES),
    }
    v
}

pub fn post(c: &Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let r = c.post(url).json(body).send().unwrap();
    let status = r.status();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn get(c: &Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().unwrap();
    let status = r.status();
    (status, r.json().unwrap_or(Value::Null))
}

/// Waits until the daemon has nothing left to do: every event applied, no
/// work due (`due_work`, with `timers`: no timer at all is waiting), and
/// nothing decided still to go out. The signal that "nothing else follows".
pub fn settled(c: &Client, d: &Daemon, secs: u64, timers: bool) {
    eventually(secs, "the daemon to settle", || {
        let h: serde_json::Value = c.get(d.url("/healthz")).send().ok()?.json().ok()?;
        let zero = |k: &str| h[k].as_i64() == Some(0);
        (zero("events_pending") && zero("outbox_pending") && (!timers || zero("due_work")))
            .then_some(())
    });
}

/// Polls until `f` gives Some, or fails after `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn lead(c: &Client, d: &Daemon, id: &str) -> Option<Value> {
    let (s, v) = get(c, &d.url(&format!("/v1/leads/{id}")));
    (s == StatusCode::OK).then_some(v)
}

/// Accepted events not yet applied, as the daemon reports it.
pub fn pending(c: &Client, d: &Daemon) -> f64 {
    let (_, h) = get(c, &d.url("/healthz"));
    h["events_pending"].as_f64().unwrap_or(f64::MAX)
}

/// A metric's value in a `/metrics` text: `name` with its labels
/// (`nurture_outbox_pending{kind="email"}`) gives that series; a bare name
/// gives the sum of all its series (a labelled counter's total).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if name.contains('{') || rest.starts_with(' ') {
                rest
            } else if rest.starts_with('{') {
                rest.split_once("} ")?.1
            } else {
                return None;
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

pub fn now_rfc3339(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One row of the outbox, read straight from the database.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub lead: String,
    pub kind: String,
    pub payload: Value,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Runs `f` with a connection pool to the daemon's database.
pub fn with_db<T>(db: &str, f: impl AsyncFnOnce(&sqlx::AnyPool) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(db)
            .await
            .expect("connect to the daemon's database");
        let out = f(&pool).await;
        pool.close().await;
        out
    })
}

/// The outbox rows of one kind, in order.
pub fn outbox(db: &str, kind: &str) -> Vec<OutboxRow> {
    let kind = kind.to_string();
    with_db(db, async move |pool| {
        use sqlx::Row;
        let q = format!(
            "SELECT seq, lead, kind, payload, state, attempts, last_error FROM outbox WHERE kind = '{kind}' ORDER BY seq"
        );
        sqlx::query(&q)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| OutboxRow {
                seq: r.get(0),
                lead: r.get(1),
                kind: r.get(2),
                payload: serde_json::from_str(&r.get::<String, _>(3)).unwrap(),
                state: r.get(4),
                attempts: r.get(5),
                last_error: r.get(6),
            })
            .collect()
    })
}

/// Runs one statement against the daemon's database.
pub fn db_exec(db: &str, sql: &str) {
    let sql = sql.to_string();
    with_db(db, async move |pool| {
        sqlx::query(&sql).execute(pool).await.unwrap();
    })
}

/// A rules directory holding one file.
pub fn rules_dir(dir: &Path, yaml: &str) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("rules.yaml"), yaml).unwrap();
    rules
}

/// Message-IDs the timeline marks as possibly sent twice: a crash came
/// between handing a message to the server and recording it.
pub fn uncertain_sends(db: &str) -> std::collections::BTreeSet<String> {
    with_db(db, async |pool| {
        use sqlx::Row;
        sqlx::query("SELECT detail FROM timeline WHERE kind = 'email_sent'")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.get::<String, _>(0)).ok())
            .filter(|d| d["uncertain"] == serde_json::json!(true))
            .filter_map(|d| d["message_id"].as_str().map(str::to_string))
            .collect()
    })
}

/// What `simulate --until now` prints for the rules and events, lead by lead.
pub fn simulate_until_now(rules: &Path, events: &Path) -> Vec<Value> {
    simulate_until(rules, events, &now_rfc3339(0))
}

/// What `simulate --until UNTIL` prints for the rules and events, lead by lead.
pub fn simulate_until(rules: &Path, events: &Path, until: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["simulate"])
        .arg(rules)
        .arg("--events")
        .arg(events)
        .args(["--until", until])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `nurture gen` workload starting `days_ago` days before now, written
/// to `dir/events.jsonl`: the file, and its events.
pub fn generated(
    dir: &Path,
    leads: u32,
    events: u32,
    seed: u32,
    days_ago: i64,
) -> (PathBuf, Vec<Value>) {
    let file = dir.join("events.jsonl");
    let out = Command::new(BIN)
        .args([
            "gen",
            "--leads",
            &leads.to_string(),
            "--events",
            &events.to_string(),
        ])
        .args([
            "--seed",
            &seed.to_string(),
            "--start",
            &now_rfc3339(-days_ago * 86_400),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&file, &out.stdout).unwrap();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (file, events)
}
