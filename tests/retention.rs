//! Retention (docs/operations.md): `nurture prune` and the daemon's pruner
//! take what is older than its setting and nothing younger, a dry run
//! changes nothing and counts the same, the daemon applies events while it
//! prunes, and no lead's state changes.

use crate::support::*;
use serde_json::{json, Value};
use std::process::Command;

const RULES: &str = r#"
scoring:
  - { name: any-event, on: '*', points: 1 }
stages:
  lead: 'lead.email != ""'
templates:
  - { name: hello, subject: Hello, text: "Hi {{ unsubscribe_url }}" }
campaigns:
  - name: drip
    enroll: 'lead.stage == "lead"'
    steps:
      - { after: 0s, template: hello }
settings:
  email: { from: "Test <t@example.com>", require_consent: false }
"#;

/// Keeps the daemon's own pruner from touching anything.
const KEEP_ALL: [&str; 8] = [
    "--retain-event-payloads",
    "never",
    "--retain-timeline",
    "never",
    "--retain-outbox-bodies",
    "never",
    "--retain-ledger",
    "never",
];

fn identify(id: &str, lead: &str, at: &str) -> Value {
    json!({"id": id, "lead": lead, "type": "identify", "at": at,
           "traits": {"email": format!("{lead}@leads.example")}})
}

fn nurture(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `nurture prune`'s count for one kind (`event payloads: pruned 5 ...`).
fn count(output: &str, what: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{what}: ")))
        .and_then(|rest| rest.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("no count for {what} in {output}"))
}

/// Every row of the tables retention touches (and the leads), as text:
/// what a dry run must leave as it was.
fn snapshot(db: &str) -> Vec<String> {
    with_db(db, async |pool| {
        use sqlx::Row;
        let mut out = Vec::new();
        for q in [
            "SELECT CAST(seq AS TEXT) || id || payload || COALESCE(CAST(pruned_at AS TEXT), '-') FROM events ORDER BY seq",
            "SELECT CAST(seq AS TEXT) || payload || state FROM outbox ORDER BY seq",
            "SELECT CAST(seq AS TEXT) || kind || detail FROM timeline ORDER BY seq",
            "SELECT lead || CAST(n AS TEXT) || rule FROM ledger ORDER BY lead, n",
            "SELECT id || state || CAST(score AS TEXT) || stage FROM leads ORDER BY id",
        ] {
            for r in sqlx::query(q).fetch_all(pool).await.unwrap() {
                out.push(r.get::<String, _>(0));
            }
        }
        out
    })
}

fn rows(db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let sql = sql.to_string();
    with_db(db, async move |pool| {
        use sqlx::Row;
        sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<Option<String>, _>(i))
                    .collect()
            })
            .collect()
    })
}

fn scalar(db: &str, sql: &str) -> i64 {
    let sql = sql.to_string();
    with_db(db, async move |pool| {
        use sqlx::Row;
        sqlx::query(&sql).fetch_one(pool).await.unwrap().get(0)
    })
}

#[test]
fn prune_takes_what_is_older_than_its_setting_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(dir.path(), RULES);
    for db in backends("retention_prune", dir.path()) {
        let d = Daemon::start_args(&db, &rules, None, &KEEP_ALL);
        let c = client();
        // Old: leads whose events happened 400 days ago (their timeline
        // and ledger rows are that old), received before the cut.
        let long_ago = now_rfc3339(-400 * 86_400);
        let old: Vec<Value> = (0..5)
            .map(|i| identify(&format!("old{i}"), &format!("o{i}"), &long_ago))
            .collect();
        let (s, _) = post(&c, &d.url("/v1/events"), &json!({ "batch": old }));
        assert_eq!(s, StatusCode::ACCEPTED);
        settled(&c, &d, 30, false);
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The cut for event payloads and bodies: between the two batches.
        let cut = chrono::Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let young: Vec<Value> = (0..5)
            .map(|i| identify(&format!("young{i}"), &format!("y{i}"), &now_rfc3339(0)))
            .collect();
        let (s, _) = post(&c, &d.url("/v1/events"), &json!({ "batch": young }));
        assert_eq!(s, StatusCode::ACCEPTED);
        settled(&c, &d, 30, false);
        let leads_before = rows(
            &db,
            "SELECT id, state, CAST(score AS TEXT), stage, email FROM leads ORDER BY id",
        );
        let before = snapshot(&db);

        // As of 90 days after the cut: 90 days of event payloads and bodies
        // end at the cut; 365 days of timeline and ledger keep the young
        // leads' rows and drop those of 400 days ago.
        let as_of = (cut + chrono::Duration::days(90)).to_rfc3339();
        let prune = |dry: bool| {
            let mut a = vec![
                "prune",
                "--database-url",
                db.as_str(),
                "--retain-event-payloads",
                "90d",
                "--retain-outbox-bodies",
                "90d",
                "--retain-timeline",
                "365d",
                "--retain-ledger",
                "365d",
                "--as-of",
                as_of.as_str(),
            ];
            if dry {
                a.push("--dry-run");
            }
            let (ok, out) = nurture(&a);
            assert!(ok, "{db}: {out}");
            out
        };
        let dry = prune(true);
        assert_eq!(snapshot(&db), before, "{db}: a dry run changes nothing");
        // What the old batch made: an event, a point and an email per lead,
        // and the timeline entries stamped 400 days ago.
        let old_timeline = scalar(
            &db,
            &format!(
                "SELECT COUNT(*) FROM timeline WHERE lead LIKE 'o%' AND at < {}",
                (chrono::Utc::now() - chrono::Duration::days(300)).timestamp_millis()
            ),
        );
        assert!(old_timeline >= 5, "{db}: {old_timeline}");
        assert_eq!(count(&dry, "event payloads"), 5, "{db}: {dry}");
        assert_eq!(count(&dry, "outbox bodies"), 5, "{db}: {dry}");
        assert_eq!(count(&dry, "ledger rows"), 5, "{db}: {dry}");
        assert_eq!(
            count(&dry, "timeline entries"),
            old_timeline as u64,
            "{db}: {dry}"
        );

        let done = prune(false);
        for what in [
            "event payloads",
            "outbox bodies",
            "ledger rows",
            "timeline entries",
        ] {
            assert_eq!(
                count(&done, what),
                count(&dry, what),
                "{db}: {what}: {done}"
            );
        }
        // Events: every row stays (ids de-duplicate); old payloads gone.
        let events = rows(&db, "SELECT id, payload FROM events ORDER BY seq");
        assert_eq!(events.len(), 10, "{db}");
        for e in &events {
            let (id, payload) = (e[0].as_deref().unwrap(), e[1].as_deref().unwrap());
            if id.starts_with("old") {
                assert_eq!(payload, r#"{"pruned":true}"#, "{db}: {id}");
            } else {
                assert!(payload.contains("@leads.example"), "{db}: {id}: {payload}");
            }
        }
        // Bodies: the old ones keep only their Message-ID.
        for row in outbox(&db, "email") {
            let young = row.lead.starts_with('y');
            assert_eq!(row.payload.get("to").is_some(), young, "{db}: {row:?}");
            assert!(row.payload["message_id"].is_string(), "{db}: {row:?}");
        }
        // Ledger and timeline: the old leads' rows of 400 days ago are gone.
        assert_eq!(
            scalar(&db, "SELECT COUNT(*) FROM ledger WHERE lead LIKE 'o%'"),
            0,
            "{db}"
        );
        assert_eq!(
            scalar(&db, "SELECT COUNT(*) FROM ledger WHERE lead LIKE 'y%'"),
            5,
            "{db}"
        );
        let recent = (chrono::Utc::now() - chrono::Duration::days(1)).timestamp_millis();
        assert_eq!(
            scalar(
                &db,
                &format!("SELECT COUNT(*) FROM timeline WHERE at < {recent}")
            ),
            0,
            "{db}"
        );
        assert!(
            scalar(&db, "SELECT COUNT(*) FROM timeline WHERE lead LIKE 'y%'") >= 10,
            "{db}: the young leads' emails and their sends stay"
        );

        // No lead's state changed.
        assert_eq!(
            rows(
                &db,
                "SELECT id, state, CAST(score AS TEXT), stage, email FROM leads ORDER BY id"
            ),
            leads_before,
            "{db}"
        );
        let l = lead(&c, &d, "o1").unwrap();
        assert_eq!(
            (l["score"].clone(), l["stage"].clone()),
            (json!(1), json!("lead")),
            "{db}"
        );
        // An old event sent again is still a duplicate.
        let (s, r) = post(&c, &d.url("/v1/events"), &identify("old1", "o1", &long_ago));
        assert_eq!(
            (s, r["duplicates"].clone()),
            (StatusCode::ACCEPTED, json!(1)),
            "{db}: {r}"
        );
        // A late event for a lead whose history was pruned is applied as it
        // arrives (its history cannot be run again), on top of its state.
        let just_before =
            (chrono::Utc::now() - chrono::Duration::days(400) - chrono::Duration::minutes(10))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let late = json!({"id": "late1", "lead": "o1", "type": "page_viewed", "at": just_before});
        let (s, _) = post(&c, &d.url("/v1/events"), &late);
        assert_eq!(s, StatusCode::ACCEPTED);
        let l = eventually(20, "the late event applied", || {
            lead(&c, &d, "o1").filter(|l| l["score"] == json!(2))
        });
        assert_eq!(l["stage"], json!("lead"), "{db}");
        let (_, t) = get(&c, &d.url("/v1/leads/o1/timeline"));
        let entries = t["entries"].as_array().cloned().unwrap_or_default();
        assert!(
            entries.iter().any(|e| e["kind"] == "late"
                && e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("pruned"))),
            "{db}: {t}"
        );
        // Nothing is left to prune but what the late event added (its point
        // and its `late` entry stand 400 days ago).
        let again = prune(false);
        assert_eq!(count(&again, "ledger rows"), 1, "{db}: {again}");
        for what in ["event payloads", "outbox bodies"] {
            assert_eq!(count(&again, what), 0, "{db}: {what}: {again}");
        }
        d.stop();
    }
}

#[test]
fn the_daemon_applies_events_while_its_pruner_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(dir.path(), RULES);
    for db in backends("retention_daemon", dir.path()) {
        let d = Daemon::start_args(
            &db,
            &rules,
            None,
            &[
                "--allowed-lateness",
                "0s",
                "--retain-event-payloads",
                "1s",
                "--prune-every",
                "200ms",
                "--prune-batch",
                "50",
            ],
        );
        let c = client();
        let metrics = || c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        let mut posted = 0u64;
        let mut batch_no = 0;
        let post_batch = |batch_no: &mut i32| {
            let batch: Vec<Value> = (0..100)
                .map(|i| {
                    json!({"id": format!("b{batch_no}-{i}"), "lead": format!("l{}", i % 20),
                           "type": "page_viewed", "at": now_rfc3339(0)})
                })
                .collect();
            let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
            assert_eq!(s, StatusCode::ACCEPTED, "{r}");
            *batch_no += 1;
        };
        // Until the pruner has pruned something...
        let pruned_at_first = eventually(60, "the pruner to prune", || {
            post_batch(&mut batch_no);
            posted += 100;
            std::thread::sleep(std::time::Duration::from_millis(100));
            let p = metric(&metrics(), "nurture_pruned_event_payloads_total");
            (p > 0.0).then_some(p)
        });
        // ... and on while it prunes: every event is applied.
        for _ in 0..10 {
            post_batch(&mut batch_no);
            posted += 100;
        }
        eventually(60, "every event applied", || {
            (metric(&metrics(), "nurture_events_processed_total") == posted as f64).then_some(())
        });
        // The pruner went on meanwhile: older payloads keep going.
        eventually(30, "the pruner to go on", || {
            (metric(&metrics(), "nurture_pruned_event_payloads_total") > pruned_at_first)
                .then_some(())
        });
        let scores: i64 = (0..20)
            .map(|i| {
                lead(&c, &d, &format!("l{i}")).unwrap()["score"]
                    .as_i64()
                    .unwrap()
            })
            .sum();
        assert_eq!(scores as u64, posted, "{db}: every event counted once");
        d.stop();
        // Rows stay: their ids de-duplicate.
        assert_eq!(
            scalar(&db, "SELECT COUNT(*) FROM events") as u64,
            posted,
            "{db}"
        );
    }
}
