//! Observability (issue 19, findings 4 and 5): the backlog's age and depth
//! on `/metrics` agreeing with `/healthz`, overdue due work told apart from
//! future timers, outbox depth and age by kind, `/readyz` apart from
//! `/healthz` (an SMTP outage, a backlog past `--ready-max-lag`), labels,
//! `build_info`, process and HTTP metrics; and the logs: a span per
//! processing step naming its events and leads, an access line per request
//! with its request id, no sqlx query lines, and an outage logged once
//! when it starts and once when it ends. The deploy/ files name only
//! metrics the daemon exposes.
//!
//! Real daemon, real SQLite and PostgreSQL, the test SMTP server
//! (tests/support/smtp.rs), the guest plugins slow.wasm and trap.wasm.

use crate::support::smtp::SmtpServer;
use crate::support::*;
use serde_json::{json, Value};
use std::path::PathBuf;

fn scrape(c: &Client, d: &Daemon) -> String {
    c.get(d.url("/metrics")).send().unwrap().text().unwrap()
}

fn guest(name: &str) -> String {
    repo()
        .join(format!("tests/plugins/{name}.wasm"))
        .display()
        .to_string()
}

fn email_rules() -> PathBuf {
    repo().join("tests/fixtures/email-rules")
}

fn identify(id: &str) -> Value {
    json!({"id": format!("{id}-identify"), "lead": id, "type": "identify",
           "traits": {"email": format!("{id}@leads.example"), "consent": "opted_in"}})
}

fn ev(id: &str, lead: &str, kind: &str) -> Value {
    json!({"id": id, "lead": lead, "type": kind, "at": now_rfc3339(0)})
}

/// A plugin call that spins (up to its 20 s timeout) holds the only
/// worker: events behind it wait, and the gauges must say so, the same as
/// `/healthz`, and `/readyz` must say the backlog is too old.
#[test]
fn the_oldest_pending_events_age_is_on_metrics_and_agrees_with_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        &format!(
            "scoring:\n  - {{ name: any, on: '*', points: 1 }}\nplugins:\n  - {{ name: slow, wasm: {}, on: slow, config: {{ spin: 100000000000000 }}, fuel: 1000000000000000, timeout: 20s }}\n",
            guest("slow")
        ),
    );
    for db in backends("observe_pending", dir.path()) {
        let d = Daemon::start_args(
            &db,
            &rules,
            None,
            &["--workers", "1", "--ready-max-lag", "1s"],
        );
        let c = client();
        // Nothing waits yet: ready, and the age is 0.
        let (s, r) = get(&c, &d.url("/readyz"));
        assert_eq!(s, StatusCode::OK, "{db}: {r}");
        assert_eq!(r["status"], "ready");
        assert_eq!(
            metric(&scrape(&c, &d), "nurture_events_oldest_pending_seconds"),
            0.0
        );

        post(&c, &d.url("/v1/events"), &ev("s1", "slow", "slow"));
        eventually(10, "the plugin call in flight", || {
            (metric(&scrape(&c, &d), "nurture_plugin_calls_in_flight") == 1.0).then_some(())
        });
        for i in 0..3 {
            let (s, _) = post(
                &c,
                &d.url("/v1/events"),
                &ev(&format!("q{i}"), &format!("other{i}"), "x"),
            );
            assert_eq!(s, StatusCode::ACCEPTED);
        }
        // Read at the scrape: the same count /healthz gives, at once (a
        // sampler every 2 s said 0 while /healthz said 23,200).
        let m = scrape(&c, &d);
        let (_, h) = get(&c, &d.url("/healthz"));
        assert_eq!(
            metric(&m, "nurture_events_pending"),
            h["events_pending"].as_f64().unwrap(),
            "{db}: {h}"
        );
        assert!(metric(&m, "nurture_events_pending") >= 3.0, "{db}: {m}");
        // The age grows while they wait.
        let m = eventually(10, "the oldest pending event past --ready-max-lag", || {
            let m = scrape(&c, &d);
            (metric(&m, "nurture_events_oldest_pending_seconds") >= 1.5).then_some(m)
        });
        assert_eq!(metric(&m, "nurture_ready"), 0.0, "{db}: {m}");
        let (s, r) = get(&c, &d.url("/readyz"));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{db}: {r}");
        assert_eq!(r["status"], "not ready");
        let reasons = r["reasons"].to_string();
        assert!(
            reasons.contains("backlog: the oldest waiting event"),
            "{db}: {r}"
        );
        assert_eq!(r["checks"]["backlog"]["ok"], false, "{r}");
        assert_eq!(r["checks"]["mail"]["ok"], true, "{r}");
        // Liveness is another question: the daemon serves.
        let (s, _) = get(&c, &d.url("/healthz"));
        assert_eq!(s, StatusCode::OK);
    }
}

/// While an import is open, due work waits at its frontier: the welcome
/// step of a lead that signs up meanwhile is overdue, and said so apart
/// from the 30-day step that follows it (a future timer, not late).
#[test]
fn overdue_due_work_is_told_apart_from_future_timers() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("observe_overdue", dir.path()) {
        let d = Daemon::start_args(&db, &email_rules(), None, &["--ready-max-lag", "1s"]);
        let c = client();
        let (s, import) = post(&c, &d.url("/v1/imports"), &json!({}));
        assert_eq!(s, StatusCode::CREATED, "{import}");
        let import = import["id"].as_str().unwrap().to_string();
        post(&c, &d.url("/v1/events"), &identify("late1"));
        let m = eventually(15, "overdue work past --ready-max-lag", || {
            let m = scrape(&c, &d);
            (metric(&m, "nurture_due_work_overdue") == 1.0
                && metric(&m, "nurture_due_work_oldest_overdue_seconds") >= 1.5)
                .then_some(m)
        });
        assert_eq!(
            metric(&m, "nurture_events_pending"),
            0.0,
            "{db}: events are applied"
        );
        let (s, r) = get(&c, &d.url("/readyz"));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{db}: {r}");
        assert!(
            r["reasons"].to_string().contains("the oldest overdue work"),
            "{db}: {r}"
        );
        assert_eq!(r["checks"]["backlog"]["due_work_overdue"], 1, "{r}");

        let r = c
            .delete(d.url(&format!("/v1/imports/{import}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        // The welcome goes out; the 30-day step is stored, and not late.
        let m = eventually(15, "the welcome step done", || {
            let m = scrape(&c, &d);
            (metric(&m, "nurture_emails_sent_total") == 1.0
                && metric(&m, "nurture_due_work") == 1.0)
                .then_some(m)
        });
        assert_eq!(metric(&m, "nurture_due_work_overdue"), 0.0, "{db}: {m}");
        assert_eq!(metric(&m, "nurture_due_work_oldest_overdue_seconds"), 0.0);
        assert_eq!(
            metric(
                &m,
                "nurture_emails_sent_total{kind=\"email\",campaign=\"drip\",step=\"1\",transport=\"files\"}"
            ),
            1.0,
            "{db}: {m}"
        );
        assert_eq!(
            metric(&m, "nurture_delivery_latency_seconds_count{kind=\"email\"}"),
            1.0
        );
        let (s, r) = get(&c, &d.url("/readyz"));
        assert_eq!(s, StatusCode::OK, "{db}: {r}");
    }
}

/// An SMTP server that is down: the mail waits in the outbox (depth and
/// age by kind), `/readyz` says not ready and why, `/healthz` degraded;
/// the log says "smtp: down" once and "smtp: back after N failures" once
/// when it returns, not a line per failed send.
#[test]
fn an_smtp_outage_shows_on_readyz_and_the_outbox_and_is_logged_once_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{port}");
    let log = dir.path().join("daemon.log");
    let d = Daemon::start_logged_env(
        &db,
        &email_rules(),
        &["--smtp-url", &url],
        &[("NURTURE_LOG", "info")],
        &log,
    );
    let c = client();
    let n = 5;
    let batch: Vec<Value> = (0..n).map(|i| identify(&format!("m{i}"))).collect();
    post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
    let m = eventually(20, "every send failed twice", || {
        let m = scrape(&c, &d);
        (metric(&m, "nurture_emails_retried_total") >= 2.0 * n as f64).then_some(m)
    });
    assert_eq!(
        metric(&m, "nurture_transport_up{kind=\"smtp\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "nurture_outbox_pending{kind=\"email\"}"),
        n as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "nurture_outbox_pending{kind=\"webhook\"}"),
        0.0,
        "{m}"
    );
    assert!(
        metric(&m, "nurture_outbox_oldest_pending_seconds{kind=\"email\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "nurture_emails_retried_total{kind=\"email\",campaign=\"drip\",step=\"1\",transport=\"smtp\"}"),
        metric(&m, "nurture_emails_retried_total")
    );
    let (s, r) = get(&c, &d.url("/readyz"));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{r}");
    let reasons = r["reasons"].to_string();
    assert!(reasons.contains("mail: down for"), "{r}");
    assert!(reasons.contains("failed sends"), "{r}");
    let (s, h) = get(&c, &d.url("/healthz"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["degraded"].to_string().contains("mail: down"), "{h}");

    let smtp = SmtpServer::start_on(port);
    eventually(30, "the mail delivered", || {
        (smtp.messages().len() >= n).then_some(())
    });
    let m = eventually(10, "ready again", || {
        let (s, _) = get(&c, &d.url("/readyz"));
        let m = scrape(&c, &d);
        (s == StatusCode::OK && metric(&m, "nurture_outbox_pending{kind=\"email\"}") == 0.0)
            .then_some(m)
    });
    assert_eq!(
        metric(&m, "nurture_transport_up{kind=\"smtp\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "nurture_outbox_oldest_pending_seconds{kind=\"email\"}"),
        0.0
    );
    let failures = metric(&m, "nurture_emails_retried_total") as u64;
    d.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    let down: Vec<&str> = text.lines().filter(|l| l.contains("smtp: down")).collect();
    let back: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("smtp: back after"))
        .collect();
    assert_eq!(down.len(), 1, "one line when it went down:\n{text}");
    assert!(down[0].contains("WARN"), "{}", down[0]);
    assert_eq!(back.len(), 1, "one line when it came back:\n{text}");
    assert!(
        back[0].contains(&format!("back after {failures} failures")),
        "{failures} failed sends: {}",
        back[0]
    );
    assert!(
        !text.contains("send failed; will retry"),
        "no line per failed send:\n{text}"
    );
}

/// A 4xx for one message (a full mailbox, greylisting) is retried, but the
/// server answered: it is not an outage, and the daemon stays ready.
#[test]
fn a_4xx_for_one_message_is_retried_without_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let smtp = SmtpServer::start();
    let log = dir.path().join("daemon.log");
    let d = Daemon::start_logged_env(
        &db,
        &email_rules(),
        &["--smtp-url", &smtp.url()],
        &[("NURTURE_LOG", "info")],
        &log,
    );
    let c = client();
    post(&c, &d.url("/v1/events"), &identify("full1"));
    post(&c, &d.url("/v1/events"), &identify("ok1"));
    let m = eventually(20, "the 452 retried and the other sent", || {
        let m = scrape(&c, &d);
        (metric(&m, "nurture_emails_retried_total") >= 2.0
            && metric(&m, "nurture_emails_sent_total") == 1.0)
            .then_some(m)
    });
    assert_eq!(
        metric(&m, "nurture_transport_up{kind=\"smtp\"}"),
        1.0,
        "{m}"
    );
    let (s, r) = get(&c, &d.url("/readyz"));
    assert_eq!(s, StatusCode::OK, "{r}");
    d.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("smtp: down"), "{text}");
}

/// Every request gets an id (the client's `X-Request-Id`, or one made
/// here), returned in the response and on its access-log line, which
/// names the route template, never the raw path; the HTTP metrics count
/// by method, route and code. At debug, a processing step's lines name its
/// events and leads, and sqlx's per-query lines stay out. Rule errors are
/// labelled by plugin; `build_info` and process metrics are there.
#[test]
fn requests_and_steps_are_logged_with_their_ids_and_counted_by_route() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        &format!(
            "scoring:\n  - {{ name: any, on: '*', points: 1 }}\nplugins:\n  - {{ name: trapper, wasm: {}, on: identify }}\n",
            guest("trap")
        ),
    );
    for db in backends("observe_logs", dir.path()) {
        let log = dir.path().join("daemon.log");
        let d = Daemon::start_logged_env(
            &db,
            &rules,
            &["--log-json"],
            &[("NURTURE_LOG", "debug")],
            &log,
        );
        let c = client();
        let r = c
            .get(d.url("/v1/leads/erin%40pii.example"))
            .header("X-Request-Id", "req-observe-1")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["x-request-id"], "req-observe-1");
        let r = c.get(d.url("/healthz")).send().unwrap();
        let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(!made.is_empty());
        // A value that is not plain is replaced, not logged as given.
        let r = c
            .get(d.url("/healthz"))
            .header("X-Request-Id", "a b")
            .send()
            .unwrap();
        assert_ne!(r.headers()["x-request-id"], "a b");

        // The trap plugin traps for a lead whose `boom` attribute is true:
        // a plugin failure.
        post(
            &c,
            &d.url("/v1/events"),
            &json!({"id": "evt-observe-1", "lead": "lead-observe-1", "type": "identify",
                    "traits": {"boom": true}}),
        );
        settled(&c, &d, 20, false);
        let m = scrape(&c, &d);
        assert_eq!(
            metric(
                &m,
                "nurture_http_requests_total{method=\"GET\",route=\"/v1/leads/{id}\",code=\"404\"}"
            ),
            1.0,
            "{db}: {m}"
        );
        assert_eq!(
            metric(
                &m,
                "nurture_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/events\",code=\"202\"}"
            ),
            1.0,
            "{m}"
        );
        assert!(!m.contains("pii.example"), "no raw path in a label");
        assert_eq!(
            metric(
                &m,
                "nurture_rule_errors_total{error=\"plugin_failed\",rule=\"\",plugin=\"trapper\"}"
            ),
            1.0,
            "{db}: {m}"
        );
        assert_eq!(
            metric(
                &m,
                &format!(
                    "nurture_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0,
            "{m}"
        );
        for name in [
            "process_open_fds",
            "process_max_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(metric(&m, name) > 0.0, "{name}: {m}");
        }
        assert!(m.contains("\nprocess_cpu_seconds_total "), "{m}");
        d.stop();

        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let sqlx = lines
            .iter()
            .filter(|l| l["target"] == "sqlx::query")
            .count();
        assert_eq!(sqlx, 0, "{db}: sqlx's per-query lines at debug");
        let access: Vec<&Value> = lines
            .iter()
            .filter(|l| l["target"] == "nurture::access")
            .collect();
        let lead_404 = access
            .iter()
            .find(|l| l["span"]["request_id"] == "req-observe-1")
            .unwrap_or_else(|| panic!("the access line of req-observe-1:\n{text}"));
        assert_eq!(lead_404["fields"]["route"], "/v1/leads/{id}", "{lead_404}");
        assert_eq!(lead_404["fields"]["status"], 404);
        assert_eq!(lead_404["fields"]["method"], "GET");
        assert!(lead_404["fields"]["duration_ms"].is_number(), "{lead_404}");
        assert!(access
            .iter()
            .any(|l| l["span"]["request_id"] == made.as_str()));
        assert!(!access.iter().any(|l| l.to_string().contains("pii.example")));
        // The step that applied the event names it and its lead.
        let step = lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "step committed"
                    && l["span"]["ids"]
                        .as_str()
                        .is_some_and(|s| s.contains("evt-observe-1"))
            })
            .unwrap_or_else(|| panic!("{db}: a step line naming evt-observe-1:\n{text}"));
        assert!(
            step["span"]["leads"]
                .as_str()
                .unwrap()
                .contains("lead-observe-1"),
            "{step}"
        );
        assert_eq!(step["span"]["events"], 1, "{step}");
        assert!(step["span"]["first_seq"].is_number(), "{step}");
    }
}

/// Every metric deploy/alerts.yml and deploy/grafana-dashboard.json use is
/// one the daemon exposes (renaming one breaks this test, not an alert
/// nobody sees fire).
#[test]
fn the_deploy_files_name_only_metrics_the_daemon_exposes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let d = Daemon::start(&db, &email_rules(), None);
    let c = client();
    let m = scrape(&c, &d);
    let families: std::collections::BTreeSet<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let deploy = repo().join("deploy");
    let mut used = std::collections::BTreeSet::new();
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        used.extend(metric_names(&text));
    }
    assert!(used.len() > 15, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| {
            let family = ["_total", "_bucket", "_count", "_sum", "_info"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !families.contains(family) && !families.contains(n.as_str())
        })
        .collect();
    assert!(missing.is_empty(), "not exposed: {missing:?}\n{m}");
}

/// `nurture_*` and `process_*` names in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for prefix in ["nurture_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            // Not the tail of another word (`nurture_build_info` in a label
            // value is still a name; `my_nurture_x` is not).
            let before = start.checked_sub(1).map(|b| bytes[b]);
            if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push(text[start..end].to_string());
            }
            from = end;
        }
    }
    out
}

/// Every query of deploy/grafana-dashboard.json parses: promtool checks
/// them as recording rules (`$job` and `$instance` filled in). promtool is
/// what .ci/run installs (Debian's `prometheus` package).
#[test]
fn the_dashboards_queries_parse() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("the_dashboards_queries_parse", "promtool is not installed");
        return;
    }
    let text = std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$job", "nurture")
                .replace("$instance", ".*")
        })
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query{i}"), "expr": e}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    // JSON is YAML.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
